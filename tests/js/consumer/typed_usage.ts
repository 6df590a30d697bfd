// What an SPA writes against itemrooms-client: every line here must compile with
// `tsc --strict`, and the types must carry what the protocol sends.
import {
  connect,
  type MessageFrame,
  type RoomStatus,
  RoomError,
  type WelcomeFrame,
} from "itemrooms-client";

const room = connect({
  baseUrl: "wss://rooms.example.com",
  itemId: "42",
  token: () => Promise.resolve("a.jwt.token"),
});

room.on("message", (m: MessageFrame) => {
  const seq: number = m.seq;
  const who: string = m.sender.user;
  console.log(seq, who, m.data);
});
room.on("welcome", (w: WelcomeFrame) => console.log(w.recovered, w.members.length));
room.on("status", (s: RoomStatus) => {
  if (s.state === "open" && s.recovered === false) console.log("reload the item");
});
room.on("error", (e) => console.log(e instanceof RoomError, e.code));
room.on("members", (members) => console.log(members.map((m) => m.user)));
const off = room.on("presence", (p) => console.log(p.event === "join", p.user));
off();

export async function say(text: string): Promise<number> {
  const mine = await room.publish({ text });
  const echoed: string = mine.data.text;
  console.log(echoed, mine.ref);
  return (await room.publish([1, 2, 3], { id: "my-key-1" })).seq;
}
