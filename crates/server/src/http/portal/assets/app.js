// Keyhaven Portal: a small single-page console. Every call goes to the
// portal's /api/… paths, which forward to Keyhaven's public APIs as the
// signed-in user. All text from the server is put in the page with
// textContent, never as HTML.
"use strict";

const ARM_API = "api-version=2023-07-01";
const KV_API = "api-version=7.5";
let session = null;

// ---- small DOM helpers -------------------------------------------------
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "on") { for (const [ev, f] of Object.entries(v)) e.addEventListener(ev, f); }
    else if (k === "text") e.textContent = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const main = () => document.getElementById("main");
function show(...nodes) { main().replaceChildren(...nodes.filter((n) => n !== null && n !== undefined)); }
function isoTime(secs) { return secs ? new Date(secs * 1000).toISOString().replace(".000Z", "Z") : ""; }
function link(href, text, attrs) {
  return el("a", Object.assign({ href, on: { click: (ev) => { ev.preventDefault(); go(href); } } }, attrs || {}), text);
}
function crumbs(...parts) {
  const nav = document.getElementById("crumbs");
  nav.replaceChildren(...parts.flatMap((p, i) => [i ? " / " : "", p]));
}
function errorBox(err) {
  return el("div", { class: "error", role: "alert", "data-test": "error" },
    el("span", { class: "code", text: err.code || "Error" }), err.message || String(err));
}

// ---- API ---------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}
async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = session ? session.csrf : "";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  const text = await r.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!r.ok) {
    const e = (json && json.error) || {};
    if (r.status === 401 && e.code === "SessionExpired") { signInCard(); }
    throw new ApiError(r.status, e.code || ("HTTP" + r.status), e.message || text.slice(0, 300));
  }
  return json;
}
// An absolute nextLink of a plane, as the portal path that forwards to it.
function portalPath(nextLink, vault) {
  const u = new URL(nextLink);
  return (vault ? "/api/vault/" + encodeURIComponent(vault) : "/api/arm") + u.pathname + u.search;
}
function armId(id) { return "/api/arm" + id; }

// ---- navigation --------------------------------------------------------
function go(path) { history.pushState({}, "", path); route(); }
window.addEventListener("popstate", route);

async function route() {
  if (!session || !session.signedIn) return signInCard();
  const p = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (p[0] === "ui" && p[1] === "vaults" && p.length >= 5) {
      return await vaultPage(p[2], p[3], p[4], p[5] || "overview");
    }
    return await home();
  } catch (e) { show(errorBox(e)); }
}

function signInCard() {
  crumbs();
  const back = location.pathname.startsWith("/ui/") ? "?return=" + encodeURIComponent(location.pathname) : "";
  show(el("div", { class: "card" },
    el("h1", { text: "Sign in" }),
    el("p", { class: "muted", text: "Sign in with your Keyhaven tenant account to manage vaults, secrets, keys and certificates." }),
    el("a", { href: "/signin" + back, "data-test": "signin" }, el("button", { type: "button", text: "Sign in" }))));
}

// ---- home: subscriptions and vaults -------------------------------------
async function home() {
  crumbs(el("span", { text: "Home" }));
  show(el("p", { class: "muted", text: "Loading vaults…" }));
  const subs = (await api("GET", "/api/arm/subscriptions?api-version=2022-12-01")).value || [];
  const rows = [];
  for (const s of subs) {
    const vaults = (await api("GET", `/api/arm/subscriptions/${s.subscriptionId}/providers/Microsoft.KeyVault/vaults?${ARM_API}`)).value || [];
    for (const v of vaults) rows.push({ sub: s, v });
  }
  const filter = el("input", { type: "search", placeholder: "Filter by name or tag", "data-test": "vault-filter" });
  const body = el("tbody");
  const draw = () => {
    const q = filter.value.toLowerCase();
    body.replaceChildren(...rows.filter(({ v }) => !q || v.name.toLowerCase().includes(q) ||
      Object.entries(v.tags || {}).some(([k, x]) => (k + "=" + x).toLowerCase().includes(q)))
      .map(({ sub, v }) => {
        const rg = v.id.split("/")[4];
        return el("tr", {},
          el("td", {}, link(`/ui/vaults/${sub.subscriptionId}/${encodeURIComponent(rg)}/${encodeURIComponent(v.name)}/secrets`, v.name, { "data-test": "vault-link" })),
          el("td", { text: rg }), el("td", { text: v.location }),
          el("td", { text: (v.properties && v.properties.sku && v.properties.sku.name) || "" }),
          el("td", { text: sub.displayName || sub.subscriptionId }));
      }));
  };
  filter.addEventListener("input", draw);
  draw();
  show(el("h1", { text: "Key vaults" }), el("div", { class: "bar" }, filter),
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Resource group", "Location", "SKU", "Subscription"].map((h) => el("th", { text: h })))), body),
    rows.length ? null : el("p", { class: "muted", text: "No vaults you can see." }));
}

// ---- a vault -----------------------------------------------------------
async function vaultPage(sub, rg, name, blade) {
  if (!/^[0-9a-fA-F-]{36}$/.test(sub)) throw new ApiError(404, "SubscriptionNotFound", "The subscription in this address is not valid.");
  const base = `/ui/vaults/${sub}/${encodeURIComponent(rg)}/${encodeURIComponent(name)}`;
  crumbs(link("/", "Home"), el("span", { text: rg }), el("span", { text: name }));
  const tabs = el("div", { class: "tabs" }, ["overview", "secrets"].map((b) =>
    link(`${base}/${b}`, b[0].toUpperCase() + b.slice(1), { class: b === blade ? "on" : "", "data-test": "tab-" + b })));
  const content = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  show(el("h1", { text: name }), tabs, content);
  try {
    if (blade === "secrets") await secretsBlade(content, name);
    else await overview(content, sub, rg, name);
  } catch (e) { content.replaceChildren(errorBox(e)); }
}

async function overview(content, sub, rg, name) {
  const e = encodeURIComponent;
  const v = await api("GET", armId(`/subscriptions/${e(sub)}/resourceGroups/${e(rg)}/providers/Microsoft.KeyVault/vaults/${e(name)}?${ARM_API}`));
  const p = v.properties || {};
  const uri = p.vaultUri || "";
  const copy = el("button", { class: "plain", type: "button", text: "Copy", on: { click: () => navigator.clipboard.writeText(uri) } });
  const props = [
    ["Vault URI", el("span", {}, el("code", { text: uri, "data-test": "vault-uri" }), " ", copy)],
    ["SKU", (p.sku && p.sku.name) || ""],
    ["Permission model", p.enableRbacAuthorization ? "Azure role-based access control" : "Vault access policy"],
    ["Soft-delete retention", (p.softDeleteRetentionInDays || 90) + " days"],
    ["Purge protection", p.enablePurgeProtection ? "Enabled" : "Disabled"],
    ["Public network access", p.publicNetworkAccess || "Enabled"],
    ["Location", v.location || ""],
    ["Resource id", v.id],
  ];
  content.replaceChildren(el("dl", { class: "props" }, props.flatMap(([k, x]) => [el("dt", { text: k }), el("dd", {}, x)])));
}

// ---- secrets -------------------------------------------------------------
async function secretsBlade(content, vault) {
  const vpath = (p) => `/api/vault/${encodeURIComponent(vault)}${p}`;
  const body = el("tbody");
  const detail = el("div");
  const status = el("div");
  const filter = el("input", { type: "search", placeholder: "Filter loaded secrets by name", "data-test": "secret-filter" });
  let items = [], next = vpath(`/secrets?${KV_API}&maxresults=25`);
  const more = el("button", { class: "plain", type: "button", text: "Load more", "data-test": "secrets-more" });
  const draw = () => {
    const q = filter.value.toLowerCase();
    body.replaceChildren(...items.filter((s) => !q || s.name.toLowerCase().includes(q)).map((s) =>
      el("tr", { "data-test": "secret-row" },
        el("td", {}, el("a", { href: "#", "data-test": "secret-link", on: { click: (ev) => { ev.preventDefault(); secretDetail(detail, vault, s.name); } } }, s.name)),
        el("td", { text: s.contentType || "" }),
        el("td", { text: s.attributes && s.attributes.enabled === false ? "Disabled" : "Enabled" }),
        el("td", { text: isoTime(s.attributes && s.attributes.updated) }))));
    more.hidden = !next;
  };
  const load = async () => {
    if (!next) return;
    const page = await api("GET", next);
    for (const s of page.value || []) items.push(Object.assign({ name: s.id.split("/secrets/")[1].split("/")[0] }, s));
    next = page.nextLink ? portalPath(page.nextLink, vault) : null;
    draw();
  };
  more.addEventListener("click", () => load().catch((e) => status.replaceChildren(errorBox(e))));
  filter.addEventListener("input", draw);
  const form = newSecretForm(vault, async (name) => {
    items = []; next = vpath(`/secrets?${KV_API}&maxresults=25`);
    await load();
    await secretDetail(detail, vault, name);
  }, status);
  content.replaceChildren(
    el("div", { class: "bar" }, filter),
    status,
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Content type", "Status", "Updated"].map((h) => el("th", { text: h })))), body),
    el("div", { class: "bar" }, more),
    detail,
    el("h2", { text: "Create a secret" }), form);
  try { await load(); } catch (e) { next = null; draw(); status.replaceChildren(errorBox(e)); }
}

function newSecretForm(vault, created, status) {
  const name = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "new-secret-name" });
  const value = el("textarea", { rows: 2, required: true, "data-test": "new-secret-value" });
  const ctype = el("input", { "data-test": "new-secret-content-type" });
  const form = el("form", { class: "form", "data-test": "new-secret" },
    el("label", { text: "Name" }), name,
    el("label", { text: "Value" }), value,
    el("label", { text: "Content type" }), ctype,
    el("span"), el("button", { type: "submit", text: "Create", "data-test": "new-secret-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const body = { value: value.value };
      if (ctype.value) body.contentType = ctype.value;
      await api("PUT", `/api/vault/${encodeURIComponent(vault)}/secrets/${encodeURIComponent(name.value)}?${KV_API}`, body);
      const n = name.value;
      form.reset();
      await created(n);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return form;
}

async function secretDetail(detail, vault, name) {
  const path = `/api/vault/${encodeURIComponent(vault)}/secrets/${encodeURIComponent(name)}`;
  detail.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const versions = (await api("GET", `${path}/versions?${KV_API}&maxresults=25`)).value || [];
    const valueSlot = el("span", { "data-test": "secret-value-slot" });
    const showBtn = el("button", { type: "button", class: "plain", text: "Show secret value", "data-test": "show-value" });
    showBtn.addEventListener("click", async () => {
      try {
        const s = await api("GET", `${path}?${KV_API}`);
        const code = el("code", { class: "value", text: s.value, "data-test": "secret-value" });
        const copy = el("button", { type: "button", class: "plain", text: "Copy", on: { click: () => navigator.clipboard.writeText(s.value) } });
        valueSlot.replaceChildren(code, " ", copy);
      } catch (e) { valueSlot.replaceChildren(errorBox(e)); }
    });
    detail.replaceChildren(el("div", { class: "panel", "data-test": "secret-detail" },
      el("h2", { text: name }),
      el("div", { class: "bar" }, showBtn, valueSlot),
      el("table", {}, el("thead", {}, el("tr", {}, ["Version", "Status", "Created", "Expires"].map((h) => el("th", { text: h })))),
        el("tbody", {}, versions.map((v) => el("tr", {},
          el("td", { text: v.id.split("/").pop() }),
          el("td", { text: v.attributes.enabled === false ? "Disabled" : "Enabled" }),
          el("td", { text: isoTime(v.attributes.created) }),
          el("td", { text: isoTime(v.attributes.exp) })))))));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
}

// ---- start ---------------------------------------------------------------
async function start() {
  try {
    session = await (await fetch("/api/session", { credentials: "same-origin" })).json();
  } catch (_) { session = { signedIn: false }; }
  if (session.signedIn) {
    document.getElementById("who").textContent = session.name || session.upn;
    document.getElementById("csrf").value = session.csrf;
    document.getElementById("signout").hidden = false;
  }
  route();
}
document.addEventListener("DOMContentLoaded", start);
