from splinecam.cli import console

console()
