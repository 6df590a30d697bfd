// The demo page: one item's room, through itemrooms.js (which keeps the token in the
// subprotocol list, out of URLs and server logs, and reconnects, resumes and refreshes).
//
// The current room is `window.room` (try `room.publish({hello: "console"})`). Options in
// `window.itemroomsDemo`, set before this script runs, are passed on to `connect()`:
// the tests use it for a token source and shorter backoff.
import { connect } from "./itemrooms.js";

const $ = (id) => document.getElementById(id);
let room = null;

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
  if (room === null || room.state !== "open") {
    $("members").textContent = "";
    return;
  }
  const names = room.members.map((m) => `${m.user} (${m.client_id})`);
  if (room.presenceMode === "count") {
    // A large room: a count, and a few of the names from the welcome.
    const others = room.memberCount - 1;
    const some = names.length ? ` (among them ${names.slice(0, 5).join(", ")})` : "";
    $("members").textContent = `${others} others here${some}.`;
    return;
  }
  $("members").textContent = names.length ? `Also here: ${names.join(", ")}` : "Nobody else is here.";
}

function setControls(state) {
  const idle = state === "closed";
  $("connect").disabled = !idle;
  $("disconnect").disabled = idle;
  $("messageText").disabled = state !== "open";
  $("send").disabled = state !== "open";
}

const why = ({ code, reason }) => (reason ? `${code} ${reason}` : `${code}`);

function onStatus(status) {
  setControls(status.state);
  switch (status.state) {
    case "connecting":
      setStatus("connecting…", "");
      break;
    case "open": {
      // Below the messages shown, which the room no longer has (an empty room that was
      // forgotten and made again is a new epoch too, with nothing to say about it).
      if (status.reset && $("messages").querySelector("li.message")) {
        show("the room lost its history: what follows is its new sequence", "system");
      }
      const note = status.reset
        ? " (the room lost its history)"
        : status.recovered === false
          ? " (some messages were missed)"
          : "";
      setStatus(`connected to item ${room.itemId} as ${room.user} (${room.clientId})${note}`, "open");
      break;
    }
    case "reconnecting":
      setStatus(
        `reconnecting in ${(status.delayMs / 1000).toFixed(1)} s (attempt ${status.attempt}) after ${why(status)}`,
        "reconnecting",
      );
      break;
    case "closed":
      setStatus(`closed: ${why(status)}`, "closed");
      break;
  }
  renderMembers();
}

function onMessage(frame) {
  const li = show("", "message");
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = `#${frame.seq}`;
  const text = typeof frame.data === "string" ? frame.data : JSON.stringify(frame.data);
  li.append(seq, `${frame.sender.user}: ${text}`);
}

function start(event) {
  event.preventDefault();
  const itemId = $("itemId").value.trim();
  const options = { itemId, token: () => $("token").value.trim(), ...window.itemroomsDemo };
  room = connect(options);
  window.room = room;
  room.on("status", onStatus);
  room.on("message", onMessage);
  room.on("members", renderMembers);
  room.on("count", renderMembers);
  room.on("presence", (p) =>
    show(`${p.user} (${p.client_id}) ${p.event === "join" ? "joined" : "left the chat"}`, "presence"),
  );
  room.on("error", (err) => show(`error ${err.code}: ${err.detail}`, "error"));
  room.on("close", (c) => {
    if (c.reason !== "closed_by_client") {
      show(`connection closed: ${why(c)}${c.willRetry ? "; reconnecting" : ""}`, "system");
    }
  });
  room.on("binary", (bytes) => show(`(binary frame, ${bytes.byteLength} bytes)`, "system"));
}

function send(event) {
  event.preventDefault();
  const text = $("messageText").value;
  if (!text || room === null) return;
  $("messageText").value = "";
  room.publish(text).catch((err) => show(`not sent (${err.code}): ${text}`, "error"));
}

// `make run` prints links like /#item=demo&token=…: the fragment never reaches the server.
const params = new URLSearchParams(location.hash.slice(1));
if (params.get("item")) $("itemId").value = params.get("item");
if (params.get("token")) $("token").value = params.get("token");
// Keep the token out of the address bar, the history and copied links.
if (location.hash) history.replaceState(null, "", location.pathname + location.search);
$("connectForm").addEventListener("submit", start);
$("disconnect").addEventListener("click", () => room && room.close());
$("sendForm").addEventListener("submit", send);
