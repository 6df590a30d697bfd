// A React chat on one item's room with useItemRoom (no JSX, so it builds as is).
// The page gets the room's URL and a token in its query: ?url=wss://…/items/42/ws&token=…
import { createElement as h, StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { useItemRoom } from "itemrooms-client/react";

function Chat({ url, token }) {
  const { messages, members, status, publish } = useItemRoom({ url, token });
  return h(
    "main",
    null,
    h("p", { id: "status" }, status.state),
    h("p", { id: "members" }, `${members.length} others here`),
    h(
      "ul",
      { id: "messages" },
      messages.map((m) => h("li", { key: m.seq }, `${m.sender.user}: ${m.data}`)),
    ),
    h("button", { id: "say", onClick: () => publish("hello from react") }, "Say hello"),
  );
}

const query = new URLSearchParams(location.search);
createRoot(document.getElementById("app")).render(
  h(StrictMode, null, h(Chat, { url: query.get("url"), token: query.get("token") })),
);
