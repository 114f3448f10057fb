// A Node application using Microsoft's JavaScript SDKs against Keyhaven,
// unchanged but for the vault URL and where the token comes from
// (ClientSecretCredential with Keyhaven's authority). Challenge resource
// verification stays on. Every result is checked with Node's own crypto.
//
// Environment: KH_VAULT_URL, KH_TENANT_ID, KH_CLIENT_ID, KH_CLIENT_SECRET,
// KH_AUTHORITY, KH_PREFIX (names), and NODE_EXTRA_CA_CERTS (Keyhaven's CA).
import { createHash, createPublicKey, verify, X509Certificate } from "node:crypto";
import assert from "node:assert/strict";

import { ClientSecretCredential } from "@azure/identity";
import { SecretClient } from "@azure/keyvault-secrets";
import { KeyClient, CryptographyClient } from "@azure/keyvault-keys";
import { CertificateClient, WellKnownIssuer } from "@azure/keyvault-certificates";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const vaultUrl = env("KH_VAULT_URL");
const prefix = env("KH_PREFIX");
const credential = new ClientSecretCredential(env("KH_TENANT_ID"), env("KH_CLIENT_ID"), env("KH_CLIENT_SECRET"), {
  authorityHost: env("KH_AUTHORITY"),
  disableInstanceDiscovery: true,
});
const poll = { intervalInMs: 200 };
const steps = [];

// Secrets: set, get, a second version, list versions, delete, purge.
{
  const client = new SecretClient(vaultUrl, credential);
  const name = `${prefix}-secret`;
  const first = await client.setSecret(name, "first value", { contentType: "text/plain", tags: { app: "js" } });
  assert.equal((await client.getSecret(name)).value, "first value");
  const second = await client.setSecret(name, "second value");
  assert.equal((await client.getSecret(name)).value, "second value");
  assert.equal((await client.getSecret(name, { version: first.properties.version })).value, "first value");
  const versions = [];
  for await (const p of client.listPropertiesOfSecretVersions(name)) versions.push(p.version);
  assert.deepEqual(new Set(versions), new Set([first.properties.version, second.properties.version]));
  const deletion = await client.beginDeleteSecret(name, poll);
  await deletion.pollUntilDone();
  await client.purgeDeletedSecret(name);
  steps.push("secrets");
}

// Keys: create RSA, sign with the vault, verify here with the public key.
{
  const client = new KeyClient(vaultUrl, credential);
  const name = `${prefix}-key`;
  const key = await client.createRsaKey(name, { keySize: 2048 });
  assert.equal(key.key.kty, "RSA");
  const crypto = new CryptographyClient(key, credential);
  const digest = createHash("sha256").update("signed by keyhaven").digest();
  const signed = await crypto.sign("RS256", digest);
  const publicKey = createPublicKey({
    key: { kty: "RSA", n: Buffer.from(key.key.n).toString("base64url"), e: Buffer.from(key.key.e).toString("base64url") },
    format: "jwk",
  });
  assert.ok(verify("sha256", Buffer.from("signed by keyhaven"), publicKey, Buffer.from(signed.result)), "RS256 signature verifies");
  const wrapped = await crypto.wrapKey("RSA-OAEP", Buffer.alloc(32, 7));
  const unwrapped = await crypto.unwrapKey("RSA-OAEP", wrapped.result);
  assert.deepEqual(Buffer.from(unwrapped.result), Buffer.alloc(32, 7));
  steps.push("keys");
}

// Certificates: a self-signed certificate from a policy, parsed here.
{
  const client = new CertificateClient(vaultUrl, credential);
  const name = `${prefix}-cert`;
  const poller = await client.beginCreateCertificate(
    name,
    { issuerName: WellKnownIssuer.Self, subject: "CN=js.example.com", subjectAlternativeNames: { dnsNames: ["js.example.com"] } },
    poll,
  );
  const cert = await poller.pollUntilDone();
  const x509 = new X509Certificate(Buffer.from(cert.cer));
  assert.equal(x509.subject, "CN=js.example.com");
  assert.match(x509.subjectAltName ?? "", /DNS:js\.example\.com/);
  assert.ok(x509.verify(x509.publicKey), "self-signed certificate verifies");
  const policy = await client.getCertificatePolicy(name);
  assert.equal(policy.subject, "CN=js.example.com");
  steps.push("certificates");
}

console.log(JSON.stringify({ ok: true, steps }));
