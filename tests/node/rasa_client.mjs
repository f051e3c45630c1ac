// A customer written for Rasa's socketio channel, as rasa-webchat is: session_request, then one
// user_uttered per message, collecting bot_uttered until the server is quiet. Used by the test
// suite to prove that such clients work against the gateway unchanged.
//
//   node tests/node/rasa_client.mjs <url> <v3|v4> <session id or "-"> <message>...
//
// Prints one JSON object: {"session_id": ..., "replies": [[...bot_uttered of message 1], ...]}.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const [url, version, sessionArg, ...messages] = process.argv.slice(2);
const { io } = version === "v3" ? require("socket.io-client-v3") : require("socket.io-client");

const QUIET_MS = 1500;
const socket = io(url, { path: "/socket.io", transports: ["websocket"], reconnection: false });
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail("timed out"), 60000);

let inbox = [];
socket.on("bot_uttered", (data) => inbox.push(data));
socket.on("connect_error", (err) => fail(`connect_error: ${err.message}`));

const sessionId = await new Promise((resolve) => {
  socket.once("session_confirm", (id) => resolve(id));
  socket.emit("session_request", { session_id: sessionArg === "-" ? null : sessionArg });
});

const replies = [];
for (const message of messages) {
  inbox = [];
  socket.emit("user_uttered", { message, session_id: sessionId });
  // wait for the first reply, then until no more arrive for QUIET_MS
  let seen = -1;
  while (inbox.length === 0 || inbox.length !== seen) {
    seen = inbox.length;
    await new Promise((r) => setTimeout(r, inbox.length === 0 ? 100 : QUIET_MS));
  }
  replies.push(inbox);
}
console.log(JSON.stringify({ session_id: sessionId, replies }));
socket.close();
process.exit(0);
