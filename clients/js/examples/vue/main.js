// A Vue chat on one item's room with useItemRoom (render functions, so it builds as is).
// The page gets the room's URL and a token in its query: ?url=wss://…/items/42/ws&token=…
import { createApp, h } from "vue";
import { useItemRoom } from "itemrooms-client/vue";

const query = new URLSearchParams(location.search);

createApp({
  setup() {
    const { messages, members, status, publish } = useItemRoom({
      url: query.get("url"),
      token: query.get("token"),
    });
    return () =>
      h("main", [
        h("p", { id: "status" }, status.value.state),
        h("p", { id: "members" }, `${members.value.length} others here`),
        h(
          "ul",
          { id: "messages" },
          messages.value.map((m) => h("li", { key: m.seq }, `${m.sender.user}: ${m.data}`)),
        ),
        h("button", { id: "say", onClick: () => publish("hello from vue") }, "Say hello"),
      ]);
  },
}).mount("#app");
