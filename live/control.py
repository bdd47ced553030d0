"""Remote control of a running live loop (the stream server's control page): the hotkeys' actions by name.

    cmd = command_from_request({"action": "passthrough", "value": False})   # -> Command(PASSTHROUGH, 0)
    pipeline.command(cmd)        # the same queue the preview's hotkeys feed; FrameProcessor.handle applies it

One code path: a request becomes a :class:`~splinecam.live.hotkeys.Command` and goes through the queue
the hotkeys use, applied by ``FrameProcessor.handle`` between two frames. Toggles take an explicit value
here (``value`` true / false: "pass-through off" from a web page must never turn it on).

Requests name an action and, where it takes one, a value::

    {"action": "avatar", "value": 2}             avatar 3 (0-based, like the keys 1-9)
    {"action": "next_avatar"} / {"action": "previous_avatar"}
    {"action": "calibrate"}                      the current pose becomes the reference (C)
    {"action": "find_best"}                      start / finish the best-frame search (F)
    {"action": "passthrough", "value": false}    send the avatar (true: send the real camera) (P)
    {"action": "smoothing", "value": true}       (S)
    {"action": "mirror", "value": true}          (R)
    {"action": "mode"}                           relative → avd → standard (M)
"""

from __future__ import annotations

import html
import json

from splinecam.live.hotkeys import Action, Command

_SIMPLE = {"next_avatar": Action.NEXT_AVATAR, "previous_avatar": Action.PREVIOUS_AVATAR,
           "calibrate": Action.CALIBRATE, "find_best": Action.FIND_BEST, "mode": Action.CYCLE_MODE}
_SWITCHES = {"passthrough": Action.PASSTHROUGH, "smoothing": Action.SMOOTHING, "mirror": Action.MIRROR}
ACTIONS = ("avatar", *_SIMPLE, *_SWITCHES)


class ControlError(ValueError):
    """A control request that names no action we have, or a bad value (HTTP 400)."""


def command_from_request(data) -> Command:
    """A control request (a JSON object, see the module docstring) → the hotkeys' Command."""
    if not isinstance(data, dict):
        raise ControlError("a control request is a JSON object {\"action\": …, \"value\": …}")
    action = data.get("action")
    value = data.get("value")
    if action == "avatar":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ControlError("avatar needs \"value\": the avatar's 0-based index")
        return Command(Action.SELECT_AVATAR, value)
    if action in _SIMPLE:
        return Command(_SIMPLE[action])
    if action in _SWITCHES:
        if not isinstance(value, bool):
            raise ControlError(f"{action} needs \"value\": true or false")
        return Command(_SWITCHES[action], int(value))
    raise ControlError(f"unknown action {str(action)[:40]!r}: use one of {', '.join(ACTIONS)}")


# ----------------------------------------------------------------------------- pages

VIEWER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>splinecam</title>
<style>html,body{{margin:0;height:100%;background:#000;overflow:hidden}}
img{{display:block;width:100vw;height:100vh;object-fit:contain}}</style></head>
<body><img src="/stream.mjpg{query}" alt=""></body></html>
"""

CONTROL_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>splinecam controls</title>
<style>
body{{font:15px system-ui,sans-serif;margin:1em;background:#111;color:#eee;max-width:40em}}
button{{font:inherit;margin:.2em;padding:.4em .8em;border-radius:.3em;border:1px solid #555;background:#333;color:#eee}}
button.on{{background:#2a6;border-color:#3c8}} button.danger.on{{background:#c22;border-color:#f44}}
#pt{{font-weight:bold}} .warn{{color:#f55;font-weight:bold}} img{{max-width:100%;background:#000}}
section{{margin:.8em 0}} #msg{{color:#9cf;min-height:1.2em}}
</style></head>
<body>
<h3>splinecam</h3>
<img src="/stream.mjpg{query}" alt="output" width="480">
<div id="msg"></div>
<section><b>Avatar</b><br><span id="avatars"></span>
<button onclick="send('previous_avatar')">&larr; previous</button><button onclick="send('next_avatar')">next &rarr;</button>
</section>
<section><b>Calibration</b><br>
<button onclick="send('calibrate')">recalibrate (C)</button>
<button id="search" onclick="send('find_best')">best-frame search (F)</button>
<button id="mode" onclick="send('mode')">mode</button></section>
<section><b>Smoothing</b><br>
<button id="smooth_on" onclick="send('smoothing',true)">on</button><button id="smooth_off" onclick="send('smoothing',false)">off</button>
</section>
<section><b>Pass-through</b> <span id="pt"></span><br>
<button id="pt_off" onclick="send('passthrough',false)">off: send the avatar</button>
<button id="pt_on" class="danger" onclick="if(confirm('Send your real camera to the meeting?'))send('passthrough',true)">on: SEND MY CAMERA</button>
</section>
<section id="stats"></section>
<script>
const TOKEN = {token};
function hdrs(){{const h={{'Content-Type':'application/json'}}; if(TOKEN) h['X-Splinecam-Token']=TOKEN; return h;}}
async function send(action, value){{
  const body = value === undefined ? {{action}} : {{action, value}};
  const r = await fetch('/command', {{method:'POST', headers:hdrs(), body:JSON.stringify(body)}});
  const j = await r.json().catch(() => ({{}}));
  if(!r.ok) document.getElementById('msg').textContent = j.error || ('refused: ' + r.status);
  setTimeout(refresh, 150);
}}
function esc(s){{return String(s).replace(/[&<>"]/g, c => ({{'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}}[c]));}}
async function refresh(){{
  const r = await fetch('/state', {{headers:hdrs()}}); if(!r.ok) return;
  const s = await r.json();
  document.getElementById('avatars').innerHTML = s.avatars.map((n,i) =>
    `<button class="${{i===s.avatar?'on':''}}" onclick="send('avatar',${{i}})">${{i+1}} ${{esc(n)}}</button>`).join('');
  document.getElementById('smooth_on').className = s.smoothing ? 'on' : '';
  document.getElementById('smooth_off').className = s.smoothing ? '' : 'on';
  document.getElementById('pt_on').className = 'danger' + (s.passthrough ? ' on' : '');
  document.getElementById('pt_off').className = s.passthrough ? '' : 'on';
  document.getElementById('pt').innerHTML = s.passthrough ? '<span class="warn">ON: the meeting sees your camera</span>' : 'off';
  document.getElementById('search').className = s.searching ? 'on' : '';
  document.getElementById('mode').textContent = 'mode: ' + s.mode + ' (M)';
  if(s.message) document.getElementById('msg').textContent = s.message;
  document.getElementById('stats').textContent = `${{s.fps.toFixed(1)}} fps, ${{s.viewers}} viewer(s)` + (s.status ? ' | ' + s.status : '');
}}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""


def viewer_page(token: str | None) -> str:
    """The page for OBS's Browser Source / a browser tab: the stream, full-window, nothing else."""
    return VIEWER_PAGE.format(query=_query(token))


def control_page(token: str | None) -> str:
    return CONTROL_PAGE.format(query=_query(token), token=json.dumps(token or "").replace("<", "\\u003c"))


def _query(token: str | None) -> str:
    from urllib.parse import quote

    return f"?token={html.escape(quote(token, safe=''))}" if token else ""
