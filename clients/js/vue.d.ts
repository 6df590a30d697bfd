import type { ShallowRef } from "vue";
import type { ConnectOptions, Json, Member, MessageFrame, PublishOptions, Room, RoomError, RoomStatus } from "./itemrooms.js";

export interface ItemRoomRefs {
  /** The last `keep` messages, oldest first (cleared when the room's epoch changes). */
  messages: ShallowRef<MessageFrame[]>;
  /** The other members. */
  members: ShallowRef<Member[]>;
  status: ShallowRef<RoomStatus>;
  /** The last error event (an error frame not answered through a publish). */
  error: ShallowRef<RoomError | null>;
  room: Room;
  publish<D extends Json = Json>(data: D, options?: PublishOptions): Promise<MessageFrame<D>>;
}

/** Join a room now; leave it when the calling component or effect scope ends. */
export declare function useItemRoom(options: ConnectOptions, settings?: { keep?: number }): ItemRoomRefs;
