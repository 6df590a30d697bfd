// useItemRoom for React: one room for the component's life (itemrooms-client/react).
import { useCallback, useEffect, useRef, useState } from "react";
import { connect, RoomError } from "./itemrooms.js";

/**
 * Join a room while the component is mounted; re-join when the room (url, or baseUrl
 * and itemId) changes. Returns the last `keep` messages, the other members, the
 * member count (you included; exact in large rooms too), the status, the last error, and `publish`. A new epoch (`status.reset`) clears the
 * messages: they were of the old sequence.
 */
export function useItemRoom(options, { keep = 100 } = {}) {
  const [messages, setMessages] = useState([]);
  const [members, setMembers] = useState([]);
  const [memberCount, setMemberCount] = useState(0);
  const [status, setStatus] = useState({ state: "connecting" });
  const [error, setError] = useState(null);
  const room = useRef(null);
  const latest = useRef(options);
  latest.current = options;
  const key = options.url ?? `${options.baseUrl ?? ""} ${options.itemId ?? ""}`;
  useEffect(() => {
    const current = connect(latest.current);
    room.current = current;
    setMessages([]);
    const offs = [
      current.on("message", (m) => setMessages((all) => [...all, m].slice(-keep))),
      current.on("members", setMembers),
      current.on("count", (c) => setMemberCount(c.memberCount)),
      current.on("error", setError),
      current.on("status", (s) => {
        if (s.state === "open" && s.reset) setMessages([]);
        setStatus(s);
      }),
    ];
    return () => {
      for (const off of offs) off();
      current.close();
      if (room.current === current) room.current = null;
    };
  }, [key, keep]);
  const publish = useCallback(
    (data, publishOptions) =>
      room.current
        ? room.current.publish(data, publishOptions)
        : Promise.reject(new RoomError("not_connected", "the component is not mounted")),
    [],
  );
  return { messages, members, memberCount, status, error, publish };
}
