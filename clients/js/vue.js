// useItemRoom for Vue 3: one room for the component's (or effect scope's) life
// (itemrooms-client/vue).
import { getCurrentScope, onScopeDispose, shallowRef } from "vue";
import { connect } from "./itemrooms.js";

/**
 * Join a room now and leave it when the calling component or effect scope ends.
 * Returns refs of the last `keep` messages, the other members, the member count (you
 * included; exact in large rooms too), the status and the last
 * error, and `publish`. A new epoch (`status.reset`) clears the messages.
 */
export function useItemRoom(options, { keep = 100 } = {}) {
  const messages = shallowRef([]);
  const members = shallowRef([]);
  const memberCount = shallowRef(0);
  const status = shallowRef({ state: "connecting" });
  const error = shallowRef(null);
  const room = connect(options);
  room.on("message", (m) => {
    messages.value = [...messages.value, m].slice(-keep);
  });
  room.on("members", (list) => {
    members.value = list;
  });
  room.on("count", (c) => {
    memberCount.value = c.memberCount;
  });
  room.on("error", (e) => {
    error.value = e;
  });
  room.on("status", (s) => {
    if (s.state === "open" && s.reset) messages.value = [];
    status.value = s;
  });
  if (getCurrentScope()) onScopeDispose(() => room.close());
  return {
    messages,
    members,
    memberCount,
    status,
    error,
    room,
    publish: (data, publishOptions) => room.publish(data, publishOptions),
  };
}
