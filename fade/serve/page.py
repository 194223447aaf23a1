"""The page at `/`: type a prompt, pick an adapter, see the image (for people who would rather
try than read). Plain HTML and fetch() against the same API any client uses; no build step."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>FADE on Ray</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 44rem; color: #222; }
  h1 { font-size: 1.4rem; }
  label { display: block; margin: .6rem 0 .2rem; font-weight: 600; }
  input, select, button { font-size: 1rem; padding: .35rem; }
  #prompt { width: 100%; box-sizing: border-box; }
  .row { display: flex; gap: 1rem; align-items: end; flex-wrap: wrap; }
  #images img { width: 192px; height: 192px; image-rendering: pixelated; margin: .5rem .5rem 0 0;
                border: 1px solid #ccc; }
  #status { margin-top: .8rem; min-height: 1.2rem; }
  .error { color: #b00020; }
  #policy { color: #555; font-size: .9rem; }
</style>
</head>
<body>
<h1>FADE on Ray</h1>
<p id="policy"></p>
<form id="form">
  <label for="prompt">Prompt</label>
  <input id="prompt" name="prompt" value="a red diamond" maxlength="2000" required>
  <div class="row">
    <div><label for="adapter">Adapter</label><select id="adapter"></select></div>
    <div><label for="seed">Seed</label><input id="seed" type="number" value="0" min="0"></div>
    <div><label for="count">Images</label><input id="count" type="number" value="1" min="1"></div>
    <div><label for="token">Token</label><input id="token" type="password"
      placeholder="if the server asks"></div>
    <div><button id="go" type="submit">Generate</button></div>
  </div>
</form>
<div id="status"></div>
<div id="images"></div>
<script>
const $ = (id) => document.getElementById(id);
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("token").value) h["Authorization"] = "Bearer " + $("token").value;
  return h;
}
function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}
async function loadAdapters() {
  const reply = await fetch("v1/adapters", {headers: headers()});
  const body = await reply.json();
  if (!reply.ok) { say(body.error, true); return; }
  const select = $("adapter");
  select.innerHTML = "";
  const none = new Option("none (the policy only)", "none");
  select.add(none);
  for (const a of body.adapters) {
    select.add(new Option(a.id + ": erases " + a.concepts.join(", "), a.id));
  }
  const policy = body.policy.map((a) => a.concepts.join(", ")).join("; ");
  $("policy").textContent = policy ? "Always erased here: " + policy : "";
}
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  say("generating...", false);
  $("go").disabled = true;
  try {
    const reply = await fetch("v1/images", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify({
        prompt: $("prompt").value,
        adapter: $("adapter").value || "none",
        seed: Number($("seed").value),
        count: Number($("count").value),
      }),
    });
    const body = await reply.json();
    if (!reply.ok) { say(body.error, true); return; }
    $("images").innerHTML = "";
    for (const data of body.images) {
      const img = document.createElement("img");
      img.src = "data:image/png;base64," + data;
      img.alt = $("prompt").value;
      $("images").appendChild(img);
    }
    say(body.images.length + " image(s), adapter " + body.adapter + ", seed " + body.seed, false);
  } catch (error) {
    say(String(error), true);
  } finally {
    $("go").disabled = false;
  }
});
$("token").addEventListener("change", loadAdapters);
loadAdapters();
</script>
</body>
</html>
"""
