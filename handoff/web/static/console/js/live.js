// Live pushes from the gateway's /agent Socket.IO namespace (docs/api.md).
import { io } from "/vendor/socket.io.esm.min.js";

/** Connect with the login token; `handlers` maps push events to functions; `onState` gets
 * "live", "reconnecting" or "refused" (the token is no longer accepted, or the gateway ended
 * the login and closed the socket). */
export function connectLive(token, handlers, onState) {
  const socket = io("/agent", { path: "/socket.io", auth: { token }, reconnectionDelayMax: 4000 });
  for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
  socket.on("connect", () => onState("live"));
  // The gateway closes the socket itself only when the login ended (logout, disabled, a
  // password reset, an expired token): that is final, as a refused handshake is.
  socket.on("disconnect", (reason) => onState(
    reason === "io server disconnect" ? "refused" : "reconnecting"));
  socket.on("connect_error", () => {
    // A refused handshake (bad token) does not retry by itself; a network error does.
    onState(socket.active ? "reconnecting" : "refused");
  });
  return socket;
}
