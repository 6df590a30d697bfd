// The demo page: one item's room. The token travels in the subprotocol list
// (`itemrooms.v1, bearer.<jwt>`), which keeps it out of URLs and server logs.
const $ = (id) => document.getElementById(id);
const state = { ws: null, clientId: null, members: new Map() };

function show(text, kind = "message") {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("messages").appendChild(li);
  return li;
}

function setStatus(text, kind) {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

function renderMembers() {
  const names = [...state.members.values()].map((m) => `${m.user} (${m.client_id})`);
  $("members").textContent = names.length ? `Also here: ${names.join(", ")}` : "Nobody else is here.";
}

function setConnected(connected) {
  $("connect").disabled = connected;
  $("disconnect").disabled = !connected;
  $("messageText").disabled = !connected;
  $("send").disabled = !connected;
}

function onFrame(frame) {
  switch (frame.type) {
    case "welcome":
      state.clientId = frame.client_id;
      state.members = new Map(frame.members.map((m) => [m.client_id, m]));
      setStatus(`connected to item ${frame.item_id} as ${frame.user} (${frame.client_id})`, "open");
      renderMembers();
      break;
    case "message": {
      const li = show("", "message");
      const seq = document.createElement("span");
      seq.className = "seq";
      seq.textContent = `#${frame.seq}`;
      li.append(seq, `${frame.sender.user}: ${typeof frame.data === "string" ? frame.data : JSON.stringify(frame.data)}`);
      break;
    }
    case "presence":
      if (frame.event === "join") state.members.set(frame.client_id, frame);
      else state.members.delete(frame.client_id);
      show(`${frame.user} (${frame.client_id}) ${frame.event === "join" ? "joined" : "left the chat"}`, "presence");
      renderMembers();
      break;
    case "error":
      show(`error ${frame.code}: ${frame.detail}`, "error");
      break;
  }
}

function connect(event) {
  event.preventDefault();
  const itemId = $("itemId").value.trim();
  const token = $("token").value.trim();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/items/${encodeURIComponent(itemId)}/ws`;
  const protocols = token ? ["itemrooms.v1", `bearer.${token}`] : ["itemrooms.v1"];
  const ws = new WebSocket(url, protocols);
  state.ws = ws;
  setStatus("connecting…", "");
  setConnected(true);
  ws.onmessage = (e) => {
    if (typeof e.data === "string") onFrame(JSON.parse(e.data));
    else show(`(binary frame, ${e.data.size} bytes)`, "system");
  };
  ws.onclose = (e) => {
    const why = e.reason ? `${e.code} ${e.reason}` : `${e.code}`;
    setStatus(`closed: ${why}`, "closed");
    show(`connection closed: ${why}`, "system");
    state.members.clear();
    $("members").textContent = "";
    setConnected(false);
    if (state.ws === ws) state.ws = null;
  };
}

function send(event) {
  event.preventDefault();
  const text = $("messageText").value;
  if (!text || !state.ws) return;
  state.ws.send(JSON.stringify({ type: "publish", data: text }));
  $("messageText").value = "";
}

// `make run` prints links like /#item=demo&token=…: the fragment never reaches the server.
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("item")) $("itemId").value = params.get("item");
if (params.get("token")) $("token").value = params.get("token");
// Keep the token out of the address bar, the history and copied links.
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
$("connectForm").addEventListener("submit", connect);
$("disconnect").addEventListener("click", () => state.ws && state.ws.close(1000));
$("sendForm").addEventListener("submit", send);
