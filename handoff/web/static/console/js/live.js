// Live pushes from the gateway's /agent Socket.IO namespace (docs/api.md).
import { io } from "/vendor/socket.io.esm.min.js";

/** Connect with the login token; `handlers` maps push events to functions; `onState` gets
 * "live", "reconnecting" or "refused" (the token is no longer accepted). */
export function connectLive(token, handlers, onState) {
  const socket = io("/agent", { path: "/socket.io", auth: { token }, reconnectionDelayMax: 4000 });
  for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
  socket.on("connect", () => onState("live"));
  socket.on("disconnect", () => onState("reconnecting"));
  socket.on("connect_error", () => {
    // A refused handshake (bad token) does not retry by itself; a network error does.
    onState(socket.active ? "reconnecting" : "refused");
  });
  return socket;
}
