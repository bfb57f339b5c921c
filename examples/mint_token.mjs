// Tokens for your clients, minted in JavaScript (Node, Deno, Bun, edge runtimes) with
// jose (npm install jose): the same JWT as examples/mint_token.py makes.
//
//   SSE_SECRET=... node mint_token.mjs alice room-1
import { SignJWT } from "jose";

// At least 32 random bytes, the hub's --secret (or SSEApp's secret).
const secret = new TextEncoder().encode(process.env.SSE_SECRET);

export async function mintToken(userId, room) {
  return await new SignJWT({ sse: { subscribe: [room, "news.*"], publish: [room] } })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime("1h")
    .sign(secret);
}

const [userId = "alice", room = "room-1"] = process.argv.slice(2);
console.log(await mintToken(userId, room));
