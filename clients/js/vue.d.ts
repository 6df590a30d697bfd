import type { ShallowRef } from "vue";
import type { ConnectOptions, Json, Member, MessageFrame, PublishOptions, Room, RoomError, RoomStatus } from "./itemrooms.js";

export interface ItemRoomRefs {
  /** The last `keep` messages, oldest first (cleared when the room's epoch changes). */
  messages: ShallowRef<MessageFrame[]>;
  /** The other users (in a large room, a sample). */
  members: ShallowRef<Member[]>;
  /** Users in the room, you included: exact in large rooms too. */
  memberCount: ShallowRef<number>;
  status: ShallowRef<RoomStatus>;
  /** The last error event (an error frame not answered through a publish). */
  error: ShallowRef<RoomError | null>;
  room: Room;
  publish<D extends Json = Json>(data: D, options?: PublishOptions): Promise<MessageFrame<D>>;
}

/** Join a room now; leave it when the calling component or effect scope ends. */
export declare function useItemRoom(options: ConnectOptions, settings?: { keep?: number }): ItemRoomRefs;
