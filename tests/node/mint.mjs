// Mints a JWT with jose from a JSON spec given as the one argument, and prints it:
//   node mint.mjs '{"alg": "HS256", "key": "<secret or PEM private key>", "kid": null,
//                   "claims": {"sub": "alice", "exp": 1700000000, "sse": {...}}}'
// An HMAC alg (HS*) takes the key as the shared secret; any other a PKCS#8 PEM private key.
import { SignJWT, importPKCS8 } from "jose";

const spec = JSON.parse(process.argv[2]);
const alg = spec.alg ?? "HS256";
const key = alg.startsWith("HS")
  ? new TextEncoder().encode(spec.key)
  : await importPKCS8(spec.key, alg);
const header = { alg, typ: "JWT" };
if (spec.kid) header.kid = spec.kid;
const token = await new SignJWT(spec.claims ?? {}).setProtectedHeader(header).sign(key);
process.stdout.write(token + "\n");
