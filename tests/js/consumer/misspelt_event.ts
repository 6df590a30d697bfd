// Must NOT compile: "mesage" is no event of a room.
import { connect } from "itemrooms-client";

const room = connect({ url: "wss://rooms.example.com/items/42/ws", token: "t" });
room.on("mesage", (m) => console.log(m));
