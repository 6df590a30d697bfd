import type { ConnectOptions, Json, Member, MessageFrame, PublishOptions, RoomError, RoomStatus } from "./itemrooms.js";

export interface ItemRoomState {
  /** The last `keep` messages, oldest first (cleared when the room's epoch changes). */
  messages: MessageFrame[];
  /** The other users (in a large room, a sample). */
  members: Member[];
  /** Users in the room, you included: exact in large rooms too. */
  memberCount: number;
  status: RoomStatus;
  /** The last error event (an error frame not answered through a publish). */
  error: RoomError | null;
  publish<D extends Json = Json>(data: D, options?: PublishOptions): Promise<MessageFrame<D>>;
}

/** Join a room while the component is mounted (re-join when the room changes). */
export declare function useItemRoom(options: ConnectOptions, settings?: { keep?: number }): ItemRoomState;
