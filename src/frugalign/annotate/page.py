"""The annotator's page: one pair at a time, keyboard first (1: A, 2: B, 3: tie, S: skip, U: undo),
the choices in a bar that stays on screen, the responses side by side (stacked on a narrow screen).

Prompts and responses are Markdown rendered on the server (`render_markdown`): raw HTML is shown as
text, never parsed; links only to http(s) and mail; no images (no tracking pixels). The page's
Content-Security-Policy lets run only its own inline script and style (by their hashes), and lets it
fetch only its own server, so even markup that got through could not run code or call out."""

import base64
import hashlib
from functools import lru_cache


@lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt

    # "html": False shows raw HTML as text; "breaks": a model's single newlines are line breaks
    md = MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"]).disable("image")
    md.validateLink = lambda url: url.strip().lower().startswith(("http://", "https://", "mailto:"))
    return md


def render_markdown(text: str) -> str:
    """Safe HTML for a prompt, a response or the guidelines (see the module's docstring)."""
    return _markdown().render(text)


STYLE = """
  :root { --line: #d0d0d0; }
  body { font-family: system-ui, sans-serif; max-width: 76rem; margin: 0 auto; padding: 0 1rem; color: #222; }
  header { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem 1.5rem; padding: .8rem 0; }
  h1 { font-size: 1.3rem; margin: 0; flex: 1 1 auto; }
  #progress-text { font-variant-numeric: tabular-nums; }
  progress { width: 10rem; }
  .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
  @media (max-width: 700px) { .pair { grid-template-columns: 1fr; } progress { width: 6rem; } }
  .text { border: 1px solid var(--line); border-radius: 6px; padding: .2rem .9rem; min-height: 3rem;
          overflow-wrap: anywhere; line-height: 1.45; }
  .text pre, .text code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em; }
  .text pre { background: #f6f6f6; padding: .6rem; border-radius: 4px; overflow-x: auto; }
  .text table { border-collapse: collapse; } .text th, .text td { border: 1px solid var(--line); padding: .2rem .5rem; }
  #prompt { background: #f5f5f5; margin-bottom: 1rem; }
  h2 { font-size: 1rem; margin: .8rem 0 .3rem; }
  #bar { position: sticky; bottom: 0; background: #fff; border-top: 1px solid var(--line); padding: .6rem 0;
         margin-top: 1rem; display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; }
  #bar button { font-size: 1rem; padding: .5rem 1rem; }
  #bar .secondary { font-size: .9rem; }
  kbd { border: 1px solid #999; border-radius: 3px; padding: 0 .3rem; font-size: .85em; background: #fafafa; }
  #comment { flex: 1 1 14rem; font-size: .95rem; padding: .4rem; }
  #message { min-height: 1.4rem; margin: .3rem 0; }
  #message.error { color: #b00020; }
  #done { font-size: 1.2rem; padding: 2rem 0; }
  .hidden { display: none; }
"""

SCRIPT = """
"use strict";
let token = sessionStorage.getItem("frugalign-token") || "";
let current = null;
let sending = false;
const $ = (id) => document.getElementById(id);

function say(text, error) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET",
    headers: Object.assign({"Authorization": "Bearer " + token}, body ? {"Content-Type": "application/json"} : {}),
    body: body ? JSON.stringify(body) : undefined,
  });
  if (response.status === 401) { signOut("That token is not valid (or no longer)."); throw new Error("unauthorised"); }
  if (!response.ok) throw new Error((await response.json()).detail || response.statusText);
  return response.json();
}

function signOut(message) {
  sessionStorage.removeItem("frugalign-token");
  token = "";
  $("work").classList.add("hidden");
  $("signin").classList.remove("hidden");
  say(message || "", true);
}

function showProgress(progress) {
  const total = progress.labelled_by_you + progress.left_for_you;
  $("progress-text").textContent = progress.labelled_by_you + " / " + total;
  $("progress").max = Math.max(total, 1);
  $("progress").value = progress.labelled_by_you;
}

async function next() {
  const data = await api("/api/next");
  showProgress(data.progress);
  current = data.pair;
  $("done").classList.toggle("hidden", current !== null);
  $("task").classList.toggle("hidden", current === null);
  for (const element of document.querySelectorAll("#bar [data-choice], #skip, #comment")) {
    element.classList.toggle("hidden", current === null);
  }
  if (current === null) {
    $("done").textContent = "Done: nothing is left for you to label. You labelled " + data.progress.labelled_by_you +
      " pair(s). Thank you. (U undoes your last answer.)";
    return;
  }
  // HTML rendered and sanitised by the server from Markdown: raw HTML in a model output arrives as text
  $("prompt").innerHTML = current.html.prompt;
  $("a").innerHTML = current.html.a;
  $("b").innerHTML = current.html.b;
  $("comment").value = "";
  window.scrollTo(0, 0);
}

async function act(path, body, done) {
  if (sending) return;
  sending = true;
  try {
    await api(path, body);
    say(done, false);
    await next();
  } catch (e) {
    if (e.message !== "unauthorised") say("Not done: " + e.message, true);
  } finally {
    sending = false;
  }
}

function choose(choice) {
  if (!current) return;
  const names = {"A": "A is better", "B": "B is better", "tie": "a tie"};
  act("/api/label", {pair_id: current.pair_id, choice: choice, comment: $("comment").value}, "Saved: " + names[choice] + ".");
}
function skip() { if (current) act("/api/skip", {pair_id: current.pair_id}, "Skipped: it goes to someone else."); }
function undo() { act("/api/undo", {}, "Your last answer is reopened: answer it again."); }

async function start() {
  $("signin").classList.add("hidden");
  $("work").classList.remove("hidden");
  say("", false);
  try {
    const guidelines = await api("/api/instructions");
    $("guidelines").classList.toggle("hidden", !guidelines.html);
    $("guidelines-text").innerHTML = guidelines.html;
    await next();
  } catch (e) {
    if (e.message !== "unauthorised") say("Could not load: " + e.message, true);
  }
}

$("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("frugalign-token", token);
  start();
});
for (const button of document.querySelectorAll("button[data-choice]")) {
  button.addEventListener("click", () => choose(button.dataset.choice));
}
$("skip").addEventListener("click", skip);
$("undo").addEventListener("click", undo);
document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" || event.ctrlKey || event.metaKey || event.altKey || !token) return;
  const key = event.key.toLowerCase();
  const choice = {"1": "A", "2": "B", "3": "tie"}[key];
  if (choice) choose(choice);
  else if (key === "s") skip();
  else if (key === "u") undo();
});
if (token) start();
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>frugalign · annotate</title>
<style>{STYLE}</style>
</head>
<body>
<header>
  <h1>Which response is better?</h1>
  <span id="progress-text" aria-label="labelled by you / all you can label"></span>
  <progress id="progress" value="0" max="1"></progress>
</header>
<div id="message" role="status"></div>
<form id="signin">
  <label>Your token <input id="token" type="password" autocomplete="off" size="40"></label>
  <button type="submit" id="signin-button">Sign in</button>
</form>
<div id="work" class="hidden">
  <details id="guidelines" class="hidden" open><summary>Guidelines</summary><div id="guidelines-text"></div></details>
  <div id="done" class="hidden"></div>
  <div id="task">
    <h2>Prompt</h2>
    <div id="prompt" class="text"></div>
    <div class="pair">
      <div><h2>A</h2><div id="a" class="text"></div></div>
      <div><h2>B</h2><div id="b" class="text"></div></div>
    </div>
  </div>
  <div id="bar">
    <button id="choose-A" data-choice="A">A is better <kbd>1</kbd></button>
    <button id="choose-B" data-choice="B">B is better <kbd>2</kbd></button>
    <button id="choose-tie" data-choice="tie">Tie <kbd>3</kbd></button>
    <button id="skip" class="secondary">Skip <kbd>S</kbd></button>
    <button id="undo" class="secondary">Undo <kbd>U</kbd></button>
    <input id="comment" maxlength="2000" placeholder="Comment (optional)" aria-label="comment (optional)">
  </div>
</div>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _source(text: str) -> str:
    """A CSP source that allows an inline element whose whole text is `text`."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


POLICY = (f"default-src 'none'; script-src {_source(SCRIPT)}; style-src {_source(STYLE)}; connect-src 'self'; "
          "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
