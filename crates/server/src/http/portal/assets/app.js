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
    // The innermost message says most (a query's line and position).
    let detail = null;
    for (let inner = e.innererror; inner; inner = inner.innererror) if (inner.message) detail = inner.message;
    const message = e.message ? (detail && detail !== e.message ? `${e.message}: ${detail}` : e.message) : text.slice(0, 300);
    throw new ApiError(r.status, e.code || ("HTTP" + r.status), message);
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
  try {
    const p = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (p[0] === "ui" && p[1] === "vaults" && p.length >= 5) {
      return await vaultPage(p[2], p[3], p[4], p[5] || "overview");
    }
    if (p[0] === "ui" && p[1] === "create-vault") return await createVault();
    if (p[0] === "ui" && p[1] === "directory") return await directoryPage(p[2] || "users", p[3]);
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
  const deleted = el("div");
  const recent = recentVaults();
  show(recent.length ? el("div", { class: "bar recent", "data-test": "recent" }, el("span", { class: "muted", text: "Recently used:" }),
    recent.map((r) => link(r.path, r.name, { "data-test": "recent-vault" }))) : null,
    el("h1", { text: "Key vaults" }),
    el("div", { class: "bar" }, filter, link("/ui/create-vault", "Create a vault", { class: "button-link", "data-test": "create-vault" }),
      link("/ui/directory/users", "Directory", { class: "button-link", "data-test": "directory" })),
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Resource group", "Location", "SKU", "Subscription"].map((h) => el("th", { text: h })))), body),
    rows.length ? null : el("p", { class: "muted", text: "No vaults you can see." }),
    deleted);
  await deletedVaults(deleted, subs);
}

// Soft-deleted vaults: recover (a PUT with createMode recover, as Azure's)
// or purge.
async function deletedVaults(box, subs) {
  const rows = [];
  for (const s of subs) {
    try {
      for (const d of (await api("GET", `/api/arm/subscriptions/${s.subscriptionId}/providers/Microsoft.KeyVault/deletedVaults?${ARM_API}`)).value || []) rows.push({ s, d });
    } catch (_) { /* no right to list them: nothing shown */ }
  }
  if (!rows.length) return;
  const status = el("div");
  box.replaceChildren(el("h2", { text: "Deleted vaults" }), status,
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Deleted", "Purge scheduled", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.map(({ s, d }) => {
        const p = d.properties;
        const recover = el("button", { type: "button", class: "plain", text: "Recover", "data-test": "recover-vault", on: { click: async () => {
          status.replaceChildren();
          try {
            // Only what a recover needs: the vault comes back as it was (its sku included).
            await api("PUT", armId(`${p.vaultId}?${ARM_API}`), { location: p.location, properties: { createMode: "recover", tenantId: session.tenantId } });
            go("/");
          } catch (err) { status.replaceChildren(errorBox(err)); }
        } } });
        const purge = el("button", { type: "button", class: "plain", text: "Purge", "data-test": "purge-vault", on: { click: async () => {
          status.replaceChildren();
          if (!window.confirm(`Purge ${d.name}? Its secrets, keys and certificates are destroyed for good.`)) return;
          try {
            await api("POST", armId(`/subscriptions/${s.subscriptionId}/providers/Microsoft.KeyVault/locations/${encodeURIComponent(p.location)}/deletedVaults/${encodeURIComponent(d.name)}/purge?${ARM_API}`));
            go("/");
          } catch (err) { status.replaceChildren(errorBox(err)); }
        } } });
        return el("tr", { "data-test": "deleted-vault-row" }, el("td", { text: d.name }), el("td", { text: p.deletionDate }),
          el("td", { text: p.scheduledPurgeDate }), el("td", {}, recover, " ", purge));
      }))));
}

// ---- create a vault ------------------------------------------------------------
async function createVault() {
  crumbs(link("/", "Home"), el("span", { text: "Create a vault" }));
  const subs = (await api("GET", "/api/arm/subscriptions?api-version=2022-12-01")).value || [];
  const sub = el("select", { "data-test": "cv-subscription" }, subs.map((s) => el("option", { value: s.subscriptionId, text: s.displayName || s.subscriptionId })));
  const groups = el("select", { "data-test": "cv-group" });
  const newGroup = el("input", { placeholder: "or a new resource group", "data-test": "cv-new-group" });
  const loadGroups = async () => {
    let list = [];
    try { list = (await api("GET", `/api/arm/subscriptions/${sub.value}/resourcegroups?api-version=2022-09-01`)).value || []; } catch (_) { list = []; }
    groups.replaceChildren(...list.map((g) => el("option", { value: g.name, text: g.name })));
  };
  sub.addEventListener("change", loadGroups);
  const name = el("input", { required: true, pattern: "[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", "data-test": "cv-name" });
  const available = el("span", { class: "muted", "data-test": "cv-available" });
  let check = 0;
  name.addEventListener("input", async () => {
    const mine = ++check;
    available.textContent = "";
    if (name.value.length < 3) return;
    try {
      const r = await api("POST", `/api/arm/subscriptions/${sub.value}/providers/Microsoft.KeyVault/checkNameAvailability?${ARM_API}`, { name: name.value, type: "Microsoft.KeyVault/vaults" });
      if (mine === check) available.textContent = r.nameAvailable ? "Available" : (r.message || "Not available");
    } catch (err) { if (mine === check) available.textContent = err.message; }
  });
  const location = el("input", { value: "local", "data-test": "cv-location" });
  const sku = el("select", { "data-test": "cv-sku" }, el("option", { value: "standard", text: "Standard" }), el("option", { value: "premium", text: "Premium (HSM keys)" }));
  const model = el("select", { "data-test": "cv-model" }, el("option", { value: "rbac", text: "Azure role-based access control" }), el("option", { value: "policies", text: "Vault access policy" }));
  const retention = el("input", { type: "number", min: 7, max: 90, value: 90, "data-test": "cv-retention" });
  const purge = el("input", { type: "checkbox", "data-test": "cv-purge-protection" });
  const network = el("select", { "data-test": "cv-network" }, el("option", { value: "all", text: "Public: all networks" }), el("option", { value: "selected", text: "Public: selected networks" }), el("option", { value: "disabled", text: "Private endpoints only" }));
  const tags = el("textarea", { rows: 2, placeholder: "team=payments\nenv=dev", "data-test": "cv-tags" });
  const status = el("div");
  const submit = el("button", { type: "submit", text: "Create", "data-test": "cv-submit" });
  const form = el("form", { class: "form", "data-test": "create-vault-form" },
    el("label", { text: "Subscription" }), sub, el("label", { text: "Resource group" }), groups,
    el("span"), newGroup, el("label", { text: "Name" }), name, el("span"), available,
    el("label", { text: "Location" }), location, el("label", { text: "Pricing tier" }), sku,
    el("label", { text: "Permission model" }), model, el("label", { text: "Soft-delete retention (days)" }), retention,
    el("label", { text: "Purge protection" }), purge, el("label", { text: "Network access" }), network,
    el("label", { text: "Tags (name=value per line)" }), tags, el("span"), submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    submit.disabled = true;
    submit.textContent = "Creating…";
    try {
      let rg = groups.value;
      if (newGroup.value.trim()) {
        rg = newGroup.value.trim();
        await api("PUT", armId(`/subscriptions/${sub.value}/resourcegroups/${encodeURIComponent(rg)}?api-version=2022-09-01`), { location: location.value });
      }
      const t = Object.fromEntries(tags.value.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => { const i = l.indexOf("="); return i < 0 ? [l, ""] : [l.slice(0, i).trim(), l.slice(i + 1).trim()]; }));
      const props = { tenantId: session.tenantId, sku: { family: "A", name: sku.value }, enableRbacAuthorization: model.value === "rbac",
        softDeleteRetentionInDays: Number(retention.value), publicNetworkAccess: network.value === "disabled" ? "Disabled" : "Enabled",
        networkAcls: { defaultAction: network.value === "all" ? "Allow" : "Deny", bypass: "AzureServices" }, accessPolicies: [] };
      // An access-policy vault starts with one policy for its creator, as the
      // Azure Portal's does; otherwise nobody could use its data.
      if (model.value === "policies") props.accessPolicies = [{ tenantId: session.tenantId, objectId: session.oid, permissions: CREATOR_PERMISSIONS }];
      if (purge.checked) props.enablePurgeProtection = true;
      await api("PUT", armId(`/subscriptions/${sub.value}/resourceGroups/${encodeURIComponent(rg)}/providers/Microsoft.KeyVault/vaults/${encodeURIComponent(name.value)}?${ARM_API}`),
        { location: location.value, tags: t, properties: props });
      go(`/ui/vaults/${sub.value}/${encodeURIComponent(rg)}/${encodeURIComponent(name.value)}/overview`);
    } catch (err) {
      status.replaceChildren(errorBox(err));
      submit.disabled = false;
      submit.textContent = "Create";
    }
  });
  show(el("h1", { text: "Create a key vault" }), status, form);
  await loadGroups();
}

// ---- a vault -----------------------------------------------------------
// Recently used vaults: this browser's own list (names and addresses only,
// in localStorage), shown on Home.
// Kept per signed-in user and cleared at sign-out.
const recentKey = () => "keyhaven.recent." + ((session && session.oid) || "");
function recentVaults() { try { const r = JSON.parse(localStorage.getItem(recentKey()) || "[]"); return Array.isArray(r) ? r.filter((x) => x && typeof x.path === "string" && x.path.startsWith("/ui/vaults/")) : []; } catch (_) { return []; } }
function rememberVault(name, path) {
  try { localStorage.setItem(recentKey(), JSON.stringify([{ name, path }, ...recentVaults().filter((x) => x.path !== path)].slice(0, 8))); } catch (_) { /* storage off */ }
}

async function vaultPage(sub, rg, name, blade) {
  if (!/^[0-9a-fA-F-]{36}$/.test(sub)) throw new ApiError(404, "SubscriptionNotFound", "The subscription in this address is not valid.");
  const base = `/ui/vaults/${sub}/${encodeURIComponent(rg)}/${encodeURIComponent(name)}`;
  rememberVault(name, `${base}/overview`);
  crumbs(link("/", "Home"), el("span", { text: rg }), el("span", { text: name }));
  const tabs = el("div", { class: "tabs" }, ["overview", "secrets", "keys", "certificates", "networking", "access", "monitoring"].map((b) =>
    link(`${base}/${b}`, b[0].toUpperCase() + b.slice(1), { class: b === blade ? "on" : "", "data-test": "tab-" + b })));
  const content = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  show(el("h1", { text: name }), tabs, content);
  try {
    if (blade === "secrets") await secretsBlade(content, name);
    else if (blade === "keys") await keysBlade(content, name);
    else if (blade === "certificates") await certificatesBlade(content, name);
    else if (blade === "networking") await networkingBlade(content, sub, rg, name);
    else if (blade === "access") await accessBlade(content, sub, rg, name);
    else if (blade === "monitoring") await monitoringBlade(content, sub, rg, name);
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
  // What ARM lets change after creation: pricing tier, permission model,
  // purge protection (on only: it cannot be turned off), tags.
  const status = el("div");
  const sku = el("select", { "data-test": "ov-sku" }, el("option", { value: "standard", text: "Standard" }), el("option", { value: "premium", text: "Premium (HSM keys)" }));
  sku.value = (p.sku && p.sku.name) || "standard";
  const model = el("select", { "data-test": "ov-model" }, el("option", { value: "rbac", text: "Azure role-based access control" }), el("option", { value: "policies", text: "Vault access policy" }));
  model.value = p.enableRbacAuthorization ? "rbac" : "policies";
  const purge = el("input", { type: "checkbox", checked: !!p.enablePurgeProtection, disabled: !!p.enablePurgeProtection, "data-test": "ov-purge" });
  const tags = el("textarea", { rows: 3, "data-test": "ov-tags" });
  tags.value = Object.entries(v.tags || {}).map(([k, x]) => `${k}=${x}`).join("\n");
  const form = el("form", { class: "form", "data-test": "ov-edit" }, el("label", { text: "Pricing tier" }), sku, el("label", { text: "Permission model" }), model,
    el("label", { text: "Purge protection (cannot be turned off)" }), purge, el("label", { text: "Tags (name=value per line)" }), tags,
    el("span"), el("button", { type: "submit", text: "Save", "data-test": "ov-save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    // Only what changed: a permission-model switch needs more rights
    // (roleAssignments/write) than the rest, as on Azure.
    const body = { tags: parseTags(tags.value), properties: {} };
    if (sku.value !== ((p.sku && p.sku.name) || "standard")) body.properties.sku = { family: "A", name: sku.value };
    if ((model.value === "rbac") !== !!p.enableRbacAuthorization) body.properties.enableRbacAuthorization = model.value === "rbac";
    if (purge.checked && !p.enablePurgeProtection) {
      if (!window.confirm("Purge protection cannot be turned off once on. Turn it on?")) return;
      body.properties.enablePurgeProtection = true;
    }
    try {
      await api("PATCH", armId(`/subscriptions/${e(sub)}/resourceGroups/${e(rg)}/providers/Microsoft.KeyVault/vaults/${e(name)}?${ARM_API}`), body);
      await overview(content, sub, rg, name);
      content.prepend(el("p", { class: "ok", text: "Saved.", "data-test": "ov-saved" }));
    } catch (err) { status.replaceChildren(errorBox(err)); }
  });
  content.replaceChildren(el("dl", { class: "props" }, props.flatMap(([k, x]) => [el("dt", { text: k }), el("dd", {}, x)])),
    el("h2", { text: "Properties" }), status, form);
}

// ---- secrets -------------------------------------------------------------
async function secretsBlade(content, vault) {
  const vpath = (p) => `/api/vault/${encodeURIComponent(vault)}${p}`;
  const body = el("tbody");
  const detail = el("div");
  const status = el("div");
  const filter = el("input", { type: "search", placeholder: "Filter loaded secrets by name", "data-test": "secret-filter" });
  const deletedBox = el("div");
  let items = [], next = vpath(`/secrets?${KV_API}&maxresults=25`);
  const more = el("button", { class: "plain", type: "button", text: "Load more", "data-test": "secrets-more" });
  const draw = () => {
    const q = filter.value.toLowerCase();
    body.replaceChildren(...items.filter((s) => !q || s.name.toLowerCase().includes(q)).map((s) =>
      el("tr", { "data-test": "secret-row" },
        el("td", {}, el("a", { href: "#", "data-test": "secret-link", on: { click: (ev) => { ev.preventDefault(); secretDetail(detail, vault, s.name, reloadList); } } }, s.name)),
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
  const reloadList = async () => { items = []; next = vpath(`/secrets?${KV_API}&maxresults=25`); await load(); };
  more.addEventListener("click", () => load().catch((e) => status.replaceChildren(errorBox(e))));
  filter.addEventListener("input", draw);
  const form = newSecretForm(vault, async (name) => {
    items = []; next = vpath(`/secrets?${KV_API}&maxresults=25`);
    await load();
    await secretDetail(detail, vault, name, reloadList);
  }, status);
  content.replaceChildren(
    el("div", { class: "bar" }, filter),
    status,
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Content type", "Status", "Updated"].map((h) => el("th", { text: h })))), body),
    el("div", { class: "bar" }, more),
    detail,
    el("h2", { text: "Create a secret" }), form,
    restoreForm("secrets", vault, status, reloadList),
    deletedToggle(deletedBox, vault, "secrets", reloadList),
    deletedBox);
  try { await load(); } catch (e) { next = null; draw(); status.replaceChildren(errorBox(e)); }
}

// Tags typed as name=value lines.
function parseTags(text) {
  return Object.fromEntries(text.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => { const i = l.indexOf("="); return i < 0 ? [l, ""] : [l.slice(0, i).trim(), l.slice(i + 1).trim()]; }));
}
// A datetime-local input's value as Key Vault's seconds since the epoch (UTC).
function epoch(input) { return input.value ? Math.floor(Date.parse(input.value + "Z") / 1000) : undefined; }

// A new secret, or (with `fixedName`) a new version of one: value, content
// type, activation and expiry (UTC), tags, enabled.
function newSecretForm(vault, created, status, fixedName) {
  const t = fixedName ? "new-version" : "new-secret";
  const name = fixedName ? null : el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "new-secret-name" });
  const value = el("textarea", { rows: 2, required: true, "data-test": `${t}-value` });
  const ctype = el("input", { "data-test": `${t}-content-type` });
  const nbf = el("input", { type: "datetime-local", "data-test": `${t}-nbf` });
  const exp = el("input", { type: "datetime-local", "data-test": `${t}-exp` });
  const tags = el("textarea", { rows: 2, placeholder: "owner=payments", "data-test": `${t}-tags` });
  const enabled = el("input", { type: "checkbox", checked: true, "data-test": `${t}-enabled` });
  const form = el("form", { class: "form", "data-test": t },
    name ? [el("label", { text: "Name" }), name] : null,
    el("label", { text: "Value" }), value,
    el("label", { text: "Content type" }), ctype,
    el("label", { text: "Activation date (UTC)" }), nbf,
    el("label", { text: "Expiration date (UTC)" }), exp,
    el("label", { text: "Tags (name=value per line)" }), tags,
    el("label", { text: "Enabled" }), enabled,
    el("span"), el("button", { type: "submit", text: fixedName ? "Create version" : "Create", "data-test": `${t}-submit` }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const n = fixedName || name.value;
      const body = { value: value.value, attributes: { enabled: enabled.checked } };
      if (ctype.value) body.contentType = ctype.value;
      if (nbf.value) body.attributes.nbf = epoch(nbf);
      if (exp.value) body.attributes.exp = epoch(exp);
      if (tags.value.trim()) body.tags = parseTags(tags.value);
      await api("PUT", `/api/vault/${encodeURIComponent(vault)}/secrets/${encodeURIComponent(n)}?${KV_API}`, body);
      form.reset();
      await created(n);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return form;
}

async function secretDetail(detail, vault, name, changed) {
  const path = `/api/vault/${encodeURIComponent(vault)}/secrets/${encodeURIComponent(name)}`;
  detail.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const status = el("div");
    const redraw = async () => { await secretDetail(detail, vault, name, changed); if (changed) await changed(); };
    const versions = await versionsTable("secrets", vault, name, status, redraw);
    const valueSlot = el("span", { "data-test": "secret-value-slot" });
    // The value only on this click: the audited SecretGet.
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
      status,
      versions,
      el("div", { class: "bar" }, deleteButton("secrets", vault, name, status, detail, changed), backupButton("secrets", vault, name, status)),
      el("details", {}, el("summary", { text: "New version", "data-test": "new-version-open" }), newSecretForm(vault, redraw, status, name))));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
}

// A button that clears `status`, runs `f` and shows its error there.
function actButton(status, label, test, f) {
  return el("button", { type: "button", class: "plain", text: label, "data-test": test, on: { click: async () => {
    status.replaceChildren();
    try { await f(); } catch (e) { status.replaceChildren(errorBox(e)); }
  } } });
}
const SINGULAR = { secrets: "secret", keys: "key", certificates: "certificate" };

// The versions of one object (secrets, keys, certificates share the shape):
// each can be enabled or disabled by a PATCH of that version.
async function versionsTable(kind, vault, name, status, redraw) {
  const path = `/api/vault/${encodeURIComponent(vault)}/${kind}/${encodeURIComponent(name)}`;
  const versions = (await api("GET", `${path}/versions?${KV_API}&maxresults=25`)).value || [];
  versions.sort((a, b) => (b.attributes.created || 0) - (a.attributes.created || 0));
  const toggle = (v) => {
    const enabled = v.attributes.enabled !== false;
    const version = (v.id || v.kid).split("/").pop();
    return actButton(status, enabled ? "Disable" : "Enable", enabled ? "disable-version" : "enable-version", async () => {
      await api("PATCH", `${path}/${encodeURIComponent(version)}?${KV_API}`, { attributes: { enabled: !enabled } });
      await redraw();
    });
  };
  return el("table", {}, el("thead", {}, el("tr", {}, ["Version", "Status", "Created", "Activates", "Expires", "Tags", ""].map((h) => el("th", { text: h })))),
    el("tbody", {}, versions.map((v) => el("tr", { "data-test": "version-row" },
      el("td", { text: (v.id || v.kid).split("/").pop() }),
      el("td", { text: v.attributes.enabled === false ? "Disabled" : "Enabled" }),
      el("td", { text: isoTime(v.attributes.created) }),
      el("td", { text: isoTime(v.attributes.nbf) }),
      el("td", { text: isoTime(v.attributes.exp) }),
      el("td", { text: Object.entries(v.tags || {}).map(([k, x]) => `${k}=${x}`).join(", "), "data-test": "version-tags" }),
      el("td", {}, toggle(v))))));
}

// Delete (soft: recoverable until purged) and backup download of one object.
function deleteButton(kind, vault, name, status, detail, changed) {
  return actButton(status, `Delete ${SINGULAR[kind]}`, `delete-${SINGULAR[kind]}`, async () => {
    if (!window.confirm(`Delete ${name}? It can be recovered until it is purged.`)) return;
    await api("DELETE", `/api/vault/${encodeURIComponent(vault)}/${kind}/${encodeURIComponent(name)}?${KV_API}`);
    detail.replaceChildren(el("p", { class: "ok", text: `${name} was deleted.`, "data-test": `${SINGULAR[kind]}-deleted` }));
    if (changed) await changed();
  });
}
function utf8Base64(s) { return btoa(String.fromCharCode(...new TextEncoder().encode(s))); }
function bytesBase64(bytes) { let s = ""; for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000)); return btoa(s); }
// The backup blob (Azure's protected format, opaque to the portal) as a file
// named as the Azure Portal names it; restore uploads that file back.
function backupButton(kind, vault, name, status) {
  return actButton(status, "Download backup", `backup-${SINGULAR[kind]}`, async () => {
    const r = await api("POST", `/api/vault/${encodeURIComponent(vault)}/${kind}/${encodeURIComponent(name)}/backup?${KV_API}`);
    const day = new Date().toISOString().slice(0, 10).replace(/-/g, "");
    const blob = utf8Base64(r.value);
    status.replaceChildren(el("a", { href: `data:application/octet-stream;base64,${blob}`, download: `${vault}-${name}-${day}.keyvault-${SINGULAR[kind]}-backup`,
      "data-test": `backup-file`, class: "button-link" }, "Save the backup file"));
  });
}
function restoreForm(kind, vault, status, restored) {
  const file = el("input", { type: "file", "data-test": `restore-${SINGULAR[kind]}-file` });
  const submit = el("button", { type: "submit", class: "plain", text: "Restore backup", "data-test": `restore-${SINGULAR[kind]}` });
  const form = el("form", { class: "bar" }, el("span", { class: "muted", text: "Restore from a backup file:" }), file, submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      if (!file.files.length) throw new ApiError(400, "BadParameter", "Choose a backup file first.");
      const blob = (await file.files[0].text()).trim();
      const r = await api("POST", `/api/vault/${encodeURIComponent(vault)}/${kind}/restore?${KV_API}`, { value: blob });
      form.reset();
      const id = r.id || (r.key && r.key.kid) || "";
      status.replaceChildren(el("p", { class: "ok", text: `Restored ${id.split(`/${kind}/`)[1].split("/")[0]}.`, "data-test": "restored" }));
      if (restored) await restored();
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return form;
}

// Soft-deleted objects of the vault: recover or purge.
async function deletedObjects(box, vault, kind, changed) {
  const base = `/api/vault/${encodeURIComponent(vault)}`;
  const one = SINGULAR[kind];
  const status = el("div");
  const page = await api("GET", `${base}/deleted${kind}?${KV_API}&maxresults=25`);
  const again = async () => { await deletedObjects(box, vault, kind, changed); if (changed) await changed(); };
  const rows = (page.value || []).map((d) => {
    const n = d.recoveryId ? d.recoveryId.split(`/deleted${kind}/`)[1] : (d.id || d.kid).split(`/${kind}/`)[1].split("/")[0];
    return el("tr", { "data-test": `deleted-${one}-row` }, el("td", { text: n }), el("td", { text: isoTime(d.deletedDate) }),
      el("td", { text: isoTime(d.scheduledPurgeDate) }),
      el("td", {}, actButton(status, "Recover", `recover-${one}`, async () => {
        await api("POST", `${base}/deleted${kind}/${encodeURIComponent(n)}/recover?${KV_API}`);
        await again();
      }), " ", actButton(status, "Purge", `purge-${one}`, async () => {
        if (!window.confirm(`Purge ${n}? It is destroyed for good.`)) return;
        await api("DELETE", `${base}/deleted${kind}/${encodeURIComponent(n)}?${KV_API}`);
        await again();
      })));
  });
  box.replaceChildren(el("h2", { text: `Deleted ${kind}` }), status,
    rows.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Deleted", "Purge scheduled", ""].map((h) => el("th", { text: h })))), el("tbody", {}, rows))
      : el("p", { class: "muted", text: `No deleted ${kind}.` }));
}
function deletedToggle(box, vault, kind, changed) {
  return el("div", { class: "bar" }, el("button", { type: "button", class: "plain", text: `Show deleted ${kind}`, "data-test": `show-deleted-${kind}`,
    on: { click: () => deletedObjects(box, vault, kind, changed).catch((e) => box.replaceChildren(errorBox(e))) } }));
}

// ---- access control (IAM) ------------------------------------------------------
// Role assignments at the vault and inherited from above, with names of
// roles and principals; add one (a role with its description, a user,
// group, service principal or managed identity found through Graph) or
// remove one made here. Exactly what the ARM and Graph APIs let the user do.
const AUTHZ_API = "api-version=2022-04-01";
const CREATOR_PERMISSIONS = {
  keys: ["get", "list", "create", "update", "import", "delete", "recover", "backup", "restore", "decrypt", "encrypt", "unwrapKey", "wrapKey", "verify", "sign", "purge"],
  secrets: ["get", "list", "set", "delete", "recover", "backup", "restore", "purge"],
  certificates: ["get", "list", "create", "update", "import", "delete", "recover", "backup", "restore", "managecontacts", "manageissuers", "getissuers", "listissuers", "setissuers", "deleteissuers", "purge"],
};
async function accessBlade(content, sub, rg, name) {
  const e = encodeURIComponent;
  const scope = `/subscriptions/${e(sub)}/resourceGroups/${e(rg)}/providers/Microsoft.KeyVault/vaults/${e(name)}`;
  const status = el("div");
  const body = el("tbody");
  const policiesBox = el("div");
  // Definitions as seen from the vault (what its Owner may read).
  const defs = (await api("GET", armId(`${scope}/providers/Microsoft.Authorization/roleDefinitions?${AUTHZ_API}`))).value || [];
  const roleName = (id) => { const d = defs.find((x) => x.id.toLowerCase() === String(id).toLowerCase() || id.toLowerCase().endsWith("/" + x.name.toLowerCase())); return d ? d.properties.roleName : id; };
  const draw = async () => {
    const list = (await api("GET", armId(`${scope}/providers/Microsoft.Authorization/roleAssignments?${AUTHZ_API}`))).value || [];
    const ids = [...new Set(list.map((a) => a.properties.principalId))];
    let names = {};
    if (ids.length) {
      try {
        const found = await api("POST", "/api/graph/v1.0/directoryObjects/getByIds", { ids });
        for (const o of found.value || []) names[o.id] = o.displayName + (o.userPrincipalName ? ` (${o.userPrincipalName})` : "");
      } catch (_) { names = {}; }
    }
    body.replaceChildren(...list.map((a) => {
      const at = a.properties.scope.toLowerCase(), mine = scope.toLowerCase();
      const here = at === mine;
      const where = here ? "This resource" : mine.startsWith(at + "/") ? "Inherited (" + a.properties.scope + ")" : "Child resource (" + a.properties.scope + ")";
      const remove = here ? el("button", { type: "button", class: "plain", text: "Remove", "data-test": "remove-assignment", on: { click: async () => {
        status.replaceChildren();
        try { await api("DELETE", armId(`${a.id}?${AUTHZ_API}`)); await draw(); } catch (err) { status.replaceChildren(errorBox(err)); }
      } } }) : null;
      return el("tr", { "data-test": "assignment-row" },
        el("td", { text: roleName(a.properties.roleDefinitionId) }),
        el("td", { text: names[a.properties.principalId] || a.properties.principalId }),
        el("td", { text: a.properties.principalType || "" }),
        el("td", { text: where }),
        el("td", {}, remove));
    }));
  };
  const role = el("select", { "data-test": "role-select" }, defs.slice().sort((a, b) => a.properties.roleName.localeCompare(b.properties.roleName))
    .map((d) => el("option", { value: d.id, text: d.properties.roleName })));
  const about = el("p", { class: "muted", "data-test": "role-description" });
  const describe = () => { const d = defs.find((x) => x.id === role.value); about.textContent = d ? d.properties.description || "" : ""; };
  role.addEventListener("change", describe);
  describe();
  const picker = principalPicker(status);
  const { who, picks } = picker;
  const add = el("button", { type: "button", text: "Add role assignment", "data-test": "add-assignment", on: { click: async () => {
    status.replaceChildren();
    if (!picks.value) { status.replaceChildren(errorBox({ code: "NoPrincipal", message: "Choose who gets the role." })); return; }
    const [principalType, principalId] = picks.value.split("|");
    try {
      await api("PUT", armId(`${scope}/providers/Microsoft.Authorization/roleAssignments/${crypto.randomUUID()}?${AUTHZ_API}`),
        { properties: { roleDefinitionId: role.value, principalId, principalType } });
      await draw();
    } catch (err) { status.replaceChildren(errorBox(err)); }
  } } });
  content.replaceChildren(
    el("table", {}, el("thead", {}, el("tr", {}, ["Role", "Principal", "Type", "Scope", ""].map((h) => el("th", { text: h })))), body),
    el("h2", { text: "Add a role assignment" }),
    el("div", { class: "form" }, el("label", { text: "Role" }), role, el("span"), about,
      el("label", { text: "Assign to" }), who, el("span"), picks, el("span"), add),
    status,
    el("h2", { text: "Check access" }), checkAccess(scope, roleName),
    policiesBox);
  await draw();
  await picker.search();
  await accessPolicies(policiesBox, scope);
}

// A search over the directory's users, groups and service principals
// (managed identities included), read once per use through Graph.
function principalPicker(status, test) {
  const t = test || "principal";
  const who = el("input", { placeholder: "Search users, groups, applications, managed identities", "data-test": `${t}-search` });
  const picks = el("select", { "data-test": `${t}-select`, size: 5 });
  let directoryP = null;
  const loadDirectory = () => directoryP || (directoryP = (async () => {
    const out = [];
    for (const [kind, path] of [["User", "users"], ["Group", "groups"], ["ServicePrincipal", "servicePrincipals"]]) {
      try {
        // Every page (Graph's @odata.nextLink), at most 20 of 999.
        let next = `/api/graph/v1.0/${path}?$top=999`;
        for (let i = 0; next && i < 20; i++) {
          const page = await api("GET", next);
          for (const o of page.value || []) out.push({ kind, o });
          const u = page["@odata.nextLink"] ? new URL(page["@odata.nextLink"]) : null;
          next = u ? "/api/graph" + u.pathname + u.search : null;
        }
      } catch (_) { /* not readable for this user: skip */ }
    }
    return out;
  })());
  const search = async () => {
    const directory = await loadDirectory();
    const q = who.value.toLowerCase();
    const chosen = picks.value;
    picks.replaceChildren(...directory.filter(({ o }) => !q || (o.displayName || "").toLowerCase().includes(q) || (o.userPrincipalName || "").toLowerCase().includes(q))
      .slice(0, 50).map(({ kind, o }) => el("option", { value: `${kind}|${o.id}`, text: `${o.displayName || o.id}${o.userPrincipalName ? " (" + o.userPrincipalName + ")" : ""} — ${kind}` })));
    // A redraw keeps what was chosen, if it is still listed.
    if (chosen) picks.value = chosen;
  };
  who.addEventListener("input", () => search().catch((err) => status.replaceChildren(errorBox(err))));
  return { who, picks, search, chosen: () => (picks.value ? picks.value.split("|") : null), label: () => (picks.selectedOptions[0] ? picks.selectedOptions[0].text : "") };
}

// "Check access": one principal's role assignments that reach this scope,
// its own and its groups' (ARM's assignedTo filter).
function checkAccess(scope, roleName) {
  const status = el("div");
  const picker = principalPicker(status, "check");
  const out = el("div");
  const go = el("button", { type: "button", class: "plain", text: "Check access", "data-test": "check-access", on: { click: async () => {
    status.replaceChildren();
    const c = picker.chosen();
    if (!c) { status.replaceChildren(errorBox({ code: "NoPrincipal", message: "Choose whose access to check." })); return; }
    try {
      const list = (await api("GET", armId(`${scope}/providers/Microsoft.Authorization/roleAssignments?${AUTHZ_API}&$filter=${encodeURIComponent(`assignedTo('${c[1]}')`)}`))).value || [];
      const reach = list.filter((a) => { const at = a.properties.scope.toLowerCase(), mine = scope.toLowerCase(); return at === mine || mine.startsWith(at + "/"); });
      out.replaceChildren(el("p", { text: `${picker.label()}: ${reach.length} role assignment(s) at this scope.`, "data-test": "check-summary" }),
        el("table", {}, el("tbody", {}, reach.map((a) => el("tr", { "data-test": "check-row" }, el("td", { text: roleName(a.properties.roleDefinitionId) }),
          el("td", { text: a.properties.principalId.toLowerCase() === c[1].toLowerCase() ? "Direct" : `Through group ${a.properties.principalId}` }),
          el("td", { text: a.properties.scope }))))));
    } catch (err) { status.replaceChildren(errorBox(err)); }
  } } });
  // The picker reads the directory on first use.
  picker.who.addEventListener("focus", () => picker.search().catch(() => {}), { once: true });
  return el("div", { class: "form" }, el("label", { text: "Principal" }), picker.who, el("span"), picker.picks, el("span"), go, el("span"), el("div", {}, status, out));
}

// An access-policy vault's policies: who has which key, secret and
// certificate permissions; add, edit or remove one (ARM's accessPolicies
// add/replace/remove). Inactive under RBAC, as on Azure.
const ALL_PERMISSIONS = {
  keys: ["get", "list", "update", "create", "import", "delete", "recover", "backup", "restore", "decrypt", "encrypt", "unwrapKey", "wrapKey", "verify", "sign", "purge", "release", "rotate", "getrotationpolicy", "setrotationpolicy"],
  secrets: ["get", "list", "set", "delete", "recover", "backup", "restore", "purge"],
  certificates: ["get", "list", "update", "create", "import", "delete", "recover", "backup", "restore", "managecontacts", "manageissuers", "getissuers", "listissuers", "setissuers", "deleteissuers", "purge"],
};
async function accessPolicies(box, scope) {
  const v = await api("GET", armId(`${scope}?${ARM_API}`));
  const p = v.properties || {};
  if (p.enableRbacAuthorization) {
    box.replaceChildren(el("h2", { text: "Access policies" }), el("p", { class: "muted", text: "This vault uses Azure role-based access control: its access policies are inactive." }));
    return;
  }
  const status = el("div");
  const policies = p.accessPolicies || [];
  let names = {};
  try {
    const found = await api("POST", "/api/graph/v1.0/directoryObjects/getByIds", { ids: policies.map((x) => x.objectId) });
    for (const o of found.value || []) names[o.id] = o.displayName + (o.userPrincipalName ? ` (${o.userPrincipalName})` : "");
  } catch (_) { names = {}; }
  const again = () => accessPolicies(box, scope);
  const boxes = {};
  const grid = el("div", { class: "perms" }, Object.entries(ALL_PERMISSIONS).map(([kind, perms]) => el("fieldset", {}, el("legend", { text: kind }),
    perms.map((x) => { const c = el("input", { type: "checkbox", value: x, "data-test": `perm-${kind}-${x}` }); (boxes[kind] = boxes[kind] || []).push(c); return el("label", { class: "check" }, c, " " + x); }))));
  const picker = principalPicker(status, "policy");
  let editing = null;
  const chosenPerms = () => Object.fromEntries(Object.entries(boxes).map(([k, cs]) => [k, cs.filter((c) => c.checked).map((c) => c.value)]));
  const save = el("button", { type: "button", text: "Save access policy", "data-test": "policy-add", on: { click: async () => {
    status.replaceChildren();
    const objectId = editing || (picker.chosen() || [])[1];
    if (!objectId) { status.replaceChildren(errorBox({ code: "NoPrincipal", message: "Choose who the policy is for." })); return; }
    try {
      await api("PUT", armId(`${scope}/accessPolicies/${editing ? "replace" : "add"}?${ARM_API}`),
        { properties: { accessPolicies: [{ tenantId: session.tenantId, objectId, permissions: chosenPerms() }] } });
      await again();
    } catch (err) { status.replaceChildren(errorBox(err)); }
  } } });
  const edit = (pol) => {
    editing = pol.objectId;
    for (const [k, cs] of Object.entries(boxes)) for (const c of cs) c.checked = ((pol.permissions || {})[k] || []).map((x) => x.toLowerCase()).includes(c.value.toLowerCase());
    save.textContent = `Save access policy for ${names[pol.objectId] || pol.objectId}`;
  };
  box.replaceChildren(el("h2", { text: "Access policies" }), status,
    el("table", {}, el("thead", {}, el("tr", {}, ["Principal", "Keys", "Secrets", "Certificates", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, policies.map((pol) => el("tr", { "data-test": "policy-row" }, el("td", { text: names[pol.objectId] || pol.objectId }),
        ["keys", "secrets", "certificates"].map((k) => el("td", { text: ((pol.permissions || {})[k] || []).join(", ") || "none" })),
        el("td", {}, actButton(status, "Edit", "policy-edit", async () => edit(pol)), " ",
          actButton(status, "Remove", "policy-remove", async () => {
            await api("PUT", armId(`${scope}/accessPolicies/remove?${ARM_API}`), { properties: { accessPolicies: [{ tenantId: pol.tenantId, objectId: pol.objectId, permissions: pol.permissions }] } });
            await again();
          })))))),
    el("h2", { text: "Add an access policy" }),
    el("div", { class: "form" }, el("label", { text: "Principal" }), picker.who, el("span"), picker.picks),
    grid, el("div", { class: "bar" }, save));
  await picker.search();
}

// ---- networking ------------------------------------------------------------
// Public access (all networks, selected networks, disabled), IP rules with
// "add my client IP", virtual-network rules, the trusted-services bypass;
// saved with one ARM PATCH of the vault. The firewall applies to the data
// plane only, so this blade keeps working whatever it is set to.
async function networkingBlade(content, sub, rg, name) {
  const e = encodeURIComponent;
  const path = armId(`/subscriptions/${e(sub)}/resourceGroups/${e(rg)}/providers/Microsoft.KeyVault/vaults/${e(name)}?${ARM_API}`);
  const v = await api("GET", path);
  const p = v.properties || {};
  const acls = p.networkAcls || { defaultAction: "Allow", bypass: "AzureServices", ipRules: [], virtualNetworkRules: [] };
  let ips = (acls.ipRules || []).map((r) => r.value);
  const mode = p.publicNetworkAccess === "Disabled" ? "disabled" : acls.defaultAction === "Deny" ? "selected" : "all";
  const status = el("div");
  const radios = [["all", "All networks"], ["selected", "Selected networks"], ["disabled", "Disabled (private endpoints only)"]].map(([val, label]) =>
    el("label", { class: "radio" }, el("input", { type: "radio", name: "access", value: val, checked: val === mode, "data-test": "access-" + val }), " " + label));
  const list = el("ul", { "data-test": "ip-rules" });
  const drawIps = () => list.replaceChildren(...ips.map((ip) => el("li", {}, el("code", { text: ip }), " ",
    el("button", { type: "button", class: "plain", text: "Remove", on: { click: () => { ips = ips.filter((x) => x !== ip); drawIps(); } } }))));
  drawIps();
  const ipInput = el("input", { placeholder: "203.0.113.7 or 203.0.113.0/24", "data-test": "ip-input" });
  const addIp = (ip) => { if (ip && !ips.includes(ip)) { ips.push(ip); drawIps(); } };
  const mine = session.clientIp || "";
  let vnets = (acls.virtualNetworkRules || []).map((r) => r.id);
  const vnetList = el("ul", { "data-test": "vnet-rules" });
  const drawVnets = () => vnetList.replaceChildren(...vnets.map((id) => el("li", { "data-test": "vnet-rule" }, el("code", { text: id }), " ",
    el("button", { type: "button", class: "plain", text: "Remove", on: { click: () => { vnets = vnets.filter((x) => x !== id); drawVnets(); } } }))));
  drawVnets();
  const vnetInput = el("input", { placeholder: "/subscriptions/…/virtualNetworks/vnet/subnets/app", class: "wide", "data-test": "vnet-input" });
  const bypass = el("input", { type: "checkbox", checked: acls.bypass !== "None", "data-test": "bypass" });
  const save = el("button", { type: "button", text: "Save", "data-test": "network-save" });
  save.addEventListener("click", async () => {
    status.replaceChildren();
    const chosen = content.querySelector("input[name=access]:checked").value;
    const body = { properties: {
      publicNetworkAccess: chosen === "disabled" ? "Disabled" : "Enabled",
      networkAcls: { defaultAction: chosen === "disabled" ? (acls.defaultAction || "Allow") : chosen === "all" ? "Allow" : "Deny", bypass: bypass.checked ? "AzureServices" : "None",
        ipRules: ips.map((value) => ({ value })), virtualNetworkRules: vnets.map((id) => ({ id })) } } };
    try {
      await api("PATCH", path, body);
      status.replaceChildren(el("p", { class: "ok", text: "Saved.", "data-test": "network-saved" }));
    } catch (err) { status.replaceChildren(errorBox(err)); }
  });
  content.replaceChildren(
    el("h2", { text: "Public network access" }), el("div", { class: "bar" }, radios),
    el("h2", { text: "Firewall: IP addresses" }), list,
    el("div", { class: "bar" }, ipInput,
      el("button", { type: "button", class: "plain", text: "Add", on: { click: () => { addIp(ipInput.value.trim()); ipInput.value = ""; } } }),
      mine ? el("button", { type: "button", class: "plain", text: `Add my client IP (${mine})`, "data-test": "add-my-ip", on: { click: () => addIp(mine) } }) : null),
    el("h2", { text: "Virtual networks" }), vnetList,
    el("div", { class: "bar" }, vnetInput, el("button", { type: "button", class: "plain", text: "Add subnet", "data-test": "vnet-add",
      on: { click: () => { const id = vnetInput.value.trim(); if (id && !vnets.includes(id)) { vnets.push(id); drawVnets(); } vnetInput.value = ""; } } })),
    el("div", { class: "bar" }, el("label", {}, bypass, " Allow trusted Microsoft services to bypass this firewall")),
    el("div", { class: "bar" }, save), status,
    el("h2", { text: "Private endpoint connections" }), privateEndpoints(v, sub, rg));
}

// The vault's private endpoints (approved at once, as Keyhaven's are), one
// added in a subnet at a given address, or removed.
function privateEndpoints(v, sub, rg) {
  const status = el("div");
  const conns = (v.properties && v.properties.privateEndpointConnections) || [];
  const NET = "api-version=2023-09-01";
  const name = el("input", { required: true, placeholder: "endpoint name", pattern: "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,79}", "data-test": "pe-name" });
  const subnet = el("input", { required: true, class: "wide", placeholder: "/subscriptions/…/virtualNetworks/vnet/subnets/endpoints", "data-test": "pe-subnet" });
  const ip = el("input", { required: true, placeholder: "198.51.100.5", "data-test": "pe-ip" });
  const form = el("form", { class: "form", "data-test": "new-pe" }, el("label", { text: "Name" }), name, el("label", { text: "Subnet" }), subnet,
    el("label", { text: "Private IP address" }), ip, el("span"), el("button", { type: "submit", text: "Create private endpoint", "data-test": "pe-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      await api("PUT", armId(`/subscriptions/${encodeURIComponent(sub)}/resourceGroups/${encodeURIComponent(rg)}/providers/Microsoft.Network/privateEndpoints/${encodeURIComponent(name.value)}?${NET}`),
        { location: v.location || "local", properties: { subnet: { id: subnet.value.trim() },
          privateLinkServiceConnections: [{ name: v.name, properties: { privateLinkServiceId: v.id, groupIds: ["vault"] } }],
          ipConfigurations: [{ name: "ipconfig", properties: { groupId: "vault", memberName: "default", privateIPAddress: ip.value.trim() } }] } });
      go(location.pathname);
    } catch (err) { status.replaceChildren(errorBox(err)); }
  });
  return el("div", {}, status,
    conns.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Private endpoint", "State", ""].map((h) => el("th", { text: h })))),
      el("tbody", {}, conns.map((c) => el("tr", { "data-test": "pe-row" }, el("td", { text: c.properties.privateEndpoint.id }),
        el("td", { text: c.properties.privateLinkServiceConnectionState.status }),
        el("td", {}, actButton(status, "Delete endpoint", "pe-delete", async () => {
          if (!window.confirm("Delete this private endpoint?")) return;
          await api("DELETE", armId(`${c.properties.privateEndpoint.id}?${NET}`));
          go(location.pathname);
        }))))))
      : el("p", { class: "muted", text: "No private endpoints." }),
    el("details", {}, el("summary", { text: "Add a private endpoint", "data-test": "pe-open" }), form));
}

// ---- monitoring --------------------------------------------------------------
// Metrics charts (Azure Monitor's metrics API over the vault), the Logs
// blade over the vault's records in Keyhaven's log store, diagnostic
// settings and event subscriptions: each the ARM API's own answer.
const RANGES = [["PT30M", 1800, "PT1M", "Last 30 minutes"], ["PT1H", 3600, "PT1M", "Last hour"], ["PT6H", 21600, "PT5M", "Last 6 hours"],
  ["P1D", 86400, "PT15M", "Last 24 hours"], ["P7D", 604800, "PT1H", "Last 7 days"]];
const PALETTE = ["#0b5cad", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#be185d"];
function iso(secs) { return new Date(secs * 1000).toISOString().replace(/\.\d{3}Z$/, "Z"); }
function svg(tag, attrs, ...kids) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of kids.flat(Infinity)) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

// A line chart: one line per series over the data points' times.
function lineChart(series, unit, agg, dots) {
  const W = 900, H = 260, L = 56, R = 12, T = 12, B = 28;
  const times = series.length ? series[0].data.map((p) => Date.parse(p.timeStamp) / 1000) : [];
  const vals = series.flatMap((s) => s.data.map((p) => p[agg]).filter((v) => typeof v === "number"));
  const peak = Math.max(0, ...vals);
  // Counts on whole steps; other units on their own scale.
  const max = agg === "count" ? Math.max(4, Math.ceil(peak / 4) * 4) : Math.max(1, peak * 1.1);
  const t0 = times[0] || 0, t1 = times[times.length - 1] || 1;
  // One instant: in the middle, not on the axis.
  const x = (t) => (t1 === t0 ? (L + W - R) / 2 : L + (W - L - R) * ((t - t0) / (t1 - t0)));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => [svg("line", { x1: L, x2: W - R, y1: y(max * f), y2: y(max * f), stroke: "#d9dee3" }),
    svg("text", { x: L - 6, y: y(max * f) + 4, "text-anchor": "end", "font-size": 11, fill: "#5c6670" }, Number((max * f).toFixed(max < 10 ? 1 : 0)))]);
  const ticks = times.length ? (t1 === t0 ? [0.5] : [0, 0.5, 1]).map((f) => {
    const t = t0 + (t1 - t0) * f;
    return svg("text", { x: t1 === t0 ? (L + W - R) / 2 : x(t), y: H - 8, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle", "font-size": 11, fill: "#5c6670" },
      new Date(t * 1000).toISOString().slice(11, 16) + " UTC");
  }) : [];
  const lines = series.map((s, i) => {
    const pts = s.data.map((p, j) => typeof p[agg] === "number" ? `${x(times[j]).toFixed(1)},${y(p[agg]).toFixed(1)}` : null).filter(Boolean);
    const line = svg("polyline", { points: pts.join(" "), fill: "none", stroke: PALETTE[i % PALETTE.length], "stroke-width": 2, "data-test": "chart-line" });
    // Points marked too (a series of one point is no line).
    const marks = dots ? pts.map((p) => { const [cx, cy] = p.split(",");
      return svg("circle", { cx, cy, r: 4, fill: PALETTE[i % PALETTE.length], "data-test": "chart-dot" }); }) : [];
    return [line, marks];
  });
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": `chart (${unit})`, "data-test": "metric-chart" },
    grid, ticks, lines, svg("text", { x: 4, y: 12, "font-size": 11, fill: "#5c6670" }, unit));
  const legend = el("div", { class: "legend" }, series.map((s, i) => el("span", { "data-test": "legend" },
    el("span", { class: `swatch s${i % PALETTE.length}` }), `${s.label}: ${s.summary}`)));
  return el("div", {}, chart, legend);
}

async function monitoringBlade(content, sub, rg, name) {
  const e = encodeURIComponent;
  const vault = `/subscriptions/${e(sub)}/resourceGroups/${e(rg)}/providers/Microsoft.KeyVault/vaults/${e(name)}`;
  const metricsBox = el("div"), logsBox = el("div"), diagBox = el("div"), eventsBox = el("div");
  const kqlBox = el("div");
  content.replaceChildren(el("h2", { text: "Metrics" }), metricsBox, el("h2", { text: "Logs" }), logsBox,
    el("h2", { text: "Log query (KQL)" }), kqlBox,
    el("h2", { text: "Diagnostic settings" }), diagBox, el("h2", { text: "Event subscriptions" }), eventsBox);
  await Promise.all([
    metricsPanel(metricsBox, vault).catch((err) => metricsBox.replaceChildren(errorBox(err))),
    logsPanel(logsBox, vault).catch((err) => logsBox.replaceChildren(errorBox(err))),
    kqlPanel(kqlBox, vault).catch((err) => kqlBox.replaceChildren(errorBox(err))),
    diagnosticsPanel(diagBox, sub, rg, vault).catch((err) => diagBox.replaceChildren(errorBox(err))),
    eventSubscriptionsPanel(eventsBox, vault).catch((err) => eventsBox.replaceChildren(errorBox(err))),
  ]);
}

async function metricsPanel(box, vault) {
  const metric = el("select", { "data-test": "metric" }, [["ServiceApiHit", "Total Service Api Hits (count)", "count"],
    ["ServiceApiLatency", "Overall Service Api Latency (average, ms)", "average"], ["ServiceApiResult", "Total Service Api Results (count)", "count"],
    ["Availability", "Overall Vault Availability (average, %)", "average"]].map(([v, t, a]) => el("option", { value: v, text: t, "data-agg": a })));
  const range = el("select", { "data-test": "metric-range" }, RANGES.map(([v, , , t]) => el("option", { value: v, text: t, selected: v === "PT1H" })));
  const split = el("select", { "data-test": "metric-split" }, el("option", { value: "", text: "No splitting" }),
    el("option", { value: "ActivityName", text: "Split by operation (ActivityName)" }), el("option", { value: "StatusCode", text: "Split by status code" }));
  const chartBox = el("div", { class: "chart" });
  let asked = 0;
  const draw = async () => {
    const mine = ++asked;   // only the latest selection's answer is drawn
    chartBox.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
    try {
      const [, secs, grain] = RANGES.find((r) => r[0] === range.value);
      const end = Math.ceil(Date.now() / 60000) * 60, start = end - secs;
      const agg = metric.selectedOptions[0].dataset.agg;
      let dim = split.value;
      if (dim === "StatusCode" && metric.value === "ServiceApiHit") dim = "";
      const q = new URLSearchParams({ "api-version": "2018-01-01", metricnames: metric.value, timespan: `${iso(start)}/${iso(end)}`,
        interval: grain, aggregation: agg === "count" ? "Count" : "Average" });
      if (dim) q.set("$filter", `${dim} eq '*'`);
      const r = await api("GET", armId(`${vault}/providers/Microsoft.Insights/metrics?${q}`));
      if (mine !== asked) return;
      const m = r.value[0];
      const series = m.timeseries.map((ts) => {
        const vals = ts.data.map((p) => p[agg]).filter((v) => typeof v === "number");
        const summary = agg === "count" ? String(vals.reduce((a, b) => a + b, 0)) : (vals.length ? (vals.reduce((a, b) => a + b, 0) / vals.length).toFixed(1) : "–");
        return { label: ts.metadatavalues.map((x) => x.value).join(" / ") || m.name.localizedValue, data: ts.data, summary };
      });
      chartBox.replaceChildren(series.length ? lineChart(series, m.unit, agg) : el("p", { class: "muted", text: "No requests in this time range." }));
    } catch (err) { if (mine === asked) chartBox.replaceChildren(errorBox(err)); }
  };
  for (const c of [metric, range, split]) c.addEventListener("change", draw);
  box.replaceChildren(el("div", { class: "bar" }, metric, range, split,
    el("button", { type: "button", class: "plain", text: "Refresh", "data-test": "metric-refresh", on: { click: draw } })), chartBox);
  await draw();
}

// The vault's audit records in Keyhaven's log store (there once a
// diagnostic setting sends AuditEvent to a workspace), newest first.
async function logsPanel(box, vault) {
  const range = el("select", { "data-test": "logs-range" }, RANGES.map(([v, , , t]) => el("option", { value: v, text: t, selected: v === "P1D" })));
  const operation = el("input", { placeholder: "Operation, e.g. SecretGet", "data-test": "logs-operation" });
  const caller = el("input", { placeholder: "Caller IP address", "data-test": "logs-caller" });
  const result = el("select", { "data-test": "logs-result" }, ["", "Success", "Failure"].map((v) => el("option", { value: v, text: v || "Any result" })));
  const body = el("tbody");
  const status = el("div");
  const run = async () => {
    status.replaceChildren();
    try {
      const secs = RANGES.find((r) => r[0] === range.value)[1];
      const q = new URLSearchParams({ "api-version": "2021-05-01-preview", from: String(Math.floor(Date.now() / 1000) - secs), top: "200" });
      if (operation.value.trim()) q.set("operation", operation.value.trim());
      if (caller.value.trim()) q.set("caller", caller.value.trim());
      if (result.value) q.set("result", result.value);
      const rows = (await api("GET", armId(`${vault}/providers/Keyhaven.Insights/auditEvents?${q}`))).value || [];
      body.replaceChildren(...rows.map((r) => {
        const claim = (r.identity && r.identity.claim) || {};
        return el("tr", { "data-test": "log-row" }, el("td", { text: r.time }), el("td", { text: r.operationName }),
          el("td", { text: `${r.resultType} (${(r.properties && r.properties.httpStatusCode) || r.resultSignature})` }),
          el("td", { text: r.callerIpAddress || "" }), el("td", { text: claim.upn || claim.appid || claim.oid || "" }),
          el("td", { text: r.durationMs }), el("td", { text: (r.properties && r.properties.id) || "" }));
      }));
      if (!rows.length) status.replaceChildren(el("p", { class: "muted", "data-test": "logs-empty",
        text: "No records. Records reach the log store once a diagnostic setting sends AuditEvent to a workspace." }));
    } catch (err) { status.replaceChildren(errorBox(err)); }
  };
  const form = el("form", { class: "bar" }, range, operation, caller, result, el("button", { type: "submit", text: "Run", "data-test": "logs-run" }));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  box.replaceChildren(form, status, el("table", { class: "logs" }, el("thead", {}, el("tr", {},
    ["Time", "Operation", "Result", "Caller IP", "Identity", "ms", "Object"].map((h) => el("th", { text: h })))), body));
  await run();
}

// KQL over the vault's records in the workspaces its diagnostic settings
// send to (Azure's resource-context query, ARM-routed), as the Logs blade
// runs it; a query ending in `render timechart` (or linechart, areachart)
// is drawn as lines over its first datetime column, `render barchart`
// (columnchart, piechart) as bars of its first number by its first text.
async function kqlPanel(box, vault) {
  const text = el("textarea", { rows: 4, spellcheck: "false", class: "kql", "data-test": "kql-text" });
  text.value = "AzureDiagnostics\n| summarize count() by OperationName\n| order by count_ desc\n| render barchart";
  const range = el("select", { "data-test": "kql-range" }, RANGES.map(([v, , , t]) => el("option", { value: v, text: t, selected: v === "P1D" })));
  const out = el("div");
  const run = async () => {
    out.replaceChildren(el("p", { class: "muted", text: "Running…" }));
    try {
      const r = await api("POST", armId(`${vault}/providers/Microsoft.Insights/logs?api-version=2018-03-01-preview`),
        { query: text.value, timespan: range.value });
      const t = r.tables[0];
      const shown = t.rows.slice(0, 500);
      const table = el("table", { class: "logs", "data-test": "kql-table" },
        el("thead", {}, el("tr", {}, t.columns.map((c) => el("th", { text: c.name, title: c.type })))),
        el("tbody", {}, shown.map((row) => el("tr", { "data-test": "kql-row" },
          row.map((v) => el("td", { text: v === null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v) }))))));
      const kind = ((text.value.match(/\|\s*render\s+(\w+)/) || [])[1] || "").toLowerCase();
      const chart = kind ? kqlChart(kind, t) : null;
      const count = el("p", { class: "muted", "data-test": "kql-count",
        text: t.rows.length > shown.length ? `${t.rows.length} rows (first ${shown.length} shown)` : `${t.rows.length} rows` });
      out.replaceChildren(...[chart, count, table].filter(Boolean));
    } catch (err) { out.replaceChildren(errorBox(err)); }
  };
  const form = el("form", { class: "kql-form" }, text, el("div", { class: "bar" }, range,
    el("button", { type: "submit", text: "Run", "data-test": "kql-run" })));
  form.addEventListener("submit", (ev) => { ev.preventDefault(); run(); });
  box.replaceChildren(form, out);
}

function kqlChart(kind, t) {
  const col = (type) => t.columns.findIndex((c) => c.type === type);
  const num = t.columns.findIndex((c) => ["long", "int", "real"].includes(c.type));
  const label = col("string");
  if (num < 0) return el("p", { class: "muted", text: `render ${kind}: the result has no numeric column to draw.` });
  if (["timechart", "linechart", "areachart"].includes(kind)) {
    const when = col("datetime");
    if (when < 0) return el("p", { class: "muted", text: `render ${kind}: the result has no datetime column.` });
    const timed = t.rows.filter((r) => r[when] !== null);
    const times = [...new Set(timed.map((r) => r[when]))].sort();
    const groups = new Map();
    for (const r of timed) {
      const key = label >= 0 ? String(r[label]) : t.columns[num].name;
      if (!groups.has(key)) groups.set(key, new Map());
      groups.get(key).set(r[when], r[num]);
    }
    // Whole numbers get whole steps on the axis (the chart's "count" scale).
    const whole = t.rows.every((r) => r[num] === null || Number.isInteger(r[num]));
    const key = whole ? "count" : "value";
    const series = [...groups.entries()].map(([name, byTime]) => {
      const data = times.map((ts) => ({ timeStamp: ts, [key]: byTime.has(ts) ? byTime.get(ts) : null }));
      const total = data.reduce((a, p) => a + (typeof p[key] === "number" ? p[key] : 0), 0);
      return { label: name, data, summary: String(Number(total.toFixed(2))) };
    });
    // Points are marked while there are few enough to see.
    const box = lineChart(series.slice(0, 20), t.columns[num].name, key, times.length * series.length <= 500);
    box.setAttribute("data-test", "kql-chart");
    return box;
  }
  // Bars: one per row, labelled by the first text column.
  const rows = t.rows.slice(0, 30);
  const W = 900, rowH = 22, L = 220, H = rows.length * rowH + 8;
  const peak = Math.max(1, ...rows.map((r) => (typeof r[num] === "number" ? r[num] : 0)));
  const bars = rows.map((r, i) => {
    const v = typeof r[num] === "number" ? r[num] : 0;
    const w = Math.max(1, ((W - L - 60) * v) / peak);
    return [svg("text", { x: L - 8, y: i * rowH + 16, "text-anchor": "end", "font-size": 12, fill: "#1f2933" },
      label >= 0 ? String(r[label]).slice(0, 32) : String(i + 1)),
    svg("rect", { x: L, y: i * rowH + 4, width: w.toFixed(1), height: rowH - 8, fill: PALETTE[0], "data-test": "kql-bar" }),
    svg("text", { x: L + w + 6, y: i * rowH + 16, "font-size": 12, fill: "#5c6670" }, String(v))];
  });
  return el("div", { "data-test": "kql-chart" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": `${kind} of ${t.columns[num].name}` }, bars));
}

async function diagnosticsPanel(box, sub, rg, vault) {
  const DIAG = "api-version=2021-05-01-preview";
  const status = el("div");
  const again = () => diagnosticsPanel(box, sub, rg, vault);
  const list = (await api("GET", armId(`${vault}/providers/Microsoft.Insights/diagnosticSettings?${DIAG}`))).value || [];
  let workspaces = [];
  try { workspaces = (await api("GET", armId(`/subscriptions/${encodeURIComponent(sub)}/resourceGroups/${encodeURIComponent(rg)}/providers/Microsoft.OperationalInsights/workspaces?api-version=2022-10-01`))).value || []; } catch (_) { workspaces = []; }
  const name = el("input", { required: true, placeholder: "Setting name", pattern: "[0-9a-zA-Z_.-]{1,260}", "data-test": "diag-name" });
  const ws = el("select", { "data-test": "diag-workspace" }, el("option", { value: "", text: "No workspace" }),
    workspaces.map((w) => el("option", { value: w.id, text: `Log Analytics workspace: ${w.name}` })));
  const logs = el("input", { type: "checkbox", checked: true, "data-test": "diag-logs" });
  const metrics = el("input", { type: "checkbox", "data-test": "diag-metrics" });
  const stdout = el("input", { type: "checkbox", "data-test": "diag-stdout" });
  const form = el("form", { class: "form", "data-test": "new-diag" }, el("label", { text: "Name" }), name,
    el("label", { text: "Send to" }), ws, el("label", { text: "Also to the server's standard output" }), stdout,
    el("label", { text: "AuditEvent (audit logs)" }), logs, el("label", { text: "AllMetrics" }), metrics,
    el("span"), el("button", { type: "submit", text: "Save setting", "data-test": "diag-save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const props = { logs: [{ category: "AuditEvent", enabled: logs.checked }], metrics: [{ category: "AllMetrics", enabled: metrics.checked }] };
      if (ws.value) props.workspaceId = ws.value;
      if (stdout.checked) props.keyhavenStdout = true;
      await api("PUT", armId(`${vault}/providers/Microsoft.Insights/diagnosticSettings/${encodeURIComponent(name.value)}?${DIAG}`), { properties: props });
      await again();
    } catch (err) { status.replaceChildren(errorBox(err)); }
  });
  const dest = (p) => [p.workspaceId ? "workspace " + p.workspaceId.split("/").pop() : null, p.storageAccountId ? "storage " + p.storageAccountId.split("/").pop() : null,
    p.keyhavenStdout ? "stdout" : null, p.keyhavenHttpEndpoint ? "HTTP endpoint" : null].filter(Boolean).join(", ");
  box.replaceChildren(status, list.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Logs", "Metrics", "Destinations", ""].map((h) => el("th", { text: h })))),
    el("tbody", {}, list.map((d) => el("tr", { "data-test": "diag-row" }, el("td", { text: d.name }),
      el("td", { text: (d.properties.logs || []).filter((l) => l.enabled).map((l) => l.category || l.categoryGroup).join(", ") }),
      el("td", { text: (d.properties.metrics || []).filter((m) => m.enabled).map((m) => m.category).join(", ") }),
      el("td", { text: dest(d.properties) }),
      el("td", {}, actButton(status, "Delete", "diag-delete", async () => {
        await api("DELETE", armId(`${vault}/providers/Microsoft.Insights/diagnosticSettings/${encodeURIComponent(d.name)}?${DIAG}`));
        await again();
      })))))) : el("p", { class: "muted", text: "No diagnostic settings: audit records go only to the node's chained log file." }),
    el("details", {}, el("summary", { text: "Add a diagnostic setting", "data-test": "diag-open" }), form));
}

async function eventSubscriptionsPanel(box, vault) {
  const EG = "api-version=2022-06-15";
  const status = el("div");
  const again = () => eventSubscriptionsPanel(box, vault);
  const list = (await api("GET", armId(`${vault}/providers/Microsoft.EventGrid/eventSubscriptions?${EG}`))).value || [];
  const TYPES = ["SecretNewVersionCreated", "SecretNearExpiry", "SecretExpired", "KeyNewVersionCreated", "KeyNearExpiry", "KeyExpired",
    "CertificateNewVersionCreated", "CertificateNearExpiry", "CertificateExpired", "VaultAccessPolicyChanged"];
  const name = el("input", { required: true, placeholder: "Subscription name", pattern: "[0-9a-zA-Z-]{3,64}", "data-test": "es-name" });
  const url = el("input", { required: true, type: "url", placeholder: "https://hooks.example.test/keyvault", "data-test": "es-url" });
  const schema = el("select", { "data-test": "es-schema" }, el("option", { value: "EventGridSchema", text: "Event Grid schema" }), el("option", { value: "CloudEventSchemaV1_0", text: "CloudEvents 1.0" }));
  const checks = TYPES.map((t) => el("label", { class: "check" }, el("input", { type: "checkbox", value: "Microsoft.KeyVault." + t }), " " + t));
  const form = el("form", { class: "form", "data-test": "new-es" }, el("label", { text: "Name" }), name, el("label", { text: "Webhook endpoint" }), url,
    el("label", { text: "Schema" }), schema, el("label", { text: "Event types (none: all)" }), el("div", { class: "checks" }, checks),
    el("span"), el("button", { type: "submit", text: "Create", "data-test": "es-save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const types = checks.map((c) => c.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
      const props = { destination: { endpointType: "WebHook", properties: { endpointUrl: url.value } }, eventDeliverySchema: schema.value,
        filter: types.length ? { includedEventTypes: types } : {} };
      await api("PUT", armId(`${vault}/providers/Microsoft.EventGrid/eventSubscriptions/${encodeURIComponent(name.value)}?${EG}`), { properties: props });
      await again();
    } catch (err) { status.replaceChildren(errorBox(err)); }
  });
  box.replaceChildren(status, list.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Endpoint", "Event types", "Schema", ""].map((h) => el("th", { text: h })))),
    el("tbody", {}, list.map((s) => el("tr", { "data-test": "es-row" }, el("td", { text: s.name }),
      el("td", { text: s.properties.destination.properties.endpointBaseUrl }),
      el("td", { text: ((s.properties.filter && s.properties.filter.includedEventTypes) || ["All"]).map((t) => t.replace("Microsoft.KeyVault.", "")).join(", ") }),
      el("td", { text: s.properties.eventDeliverySchema }),
      el("td", {}, actButton(status, "Delete", "es-delete", async () => {
        await api("DELETE", armId(`${vault}/providers/Microsoft.EventGrid/eventSubscriptions/${encodeURIComponent(s.name)}?${EG}`));
        await again();
      })))))) : el("p", { class: "muted", text: "No event subscriptions." }),
    el("details", {}, el("summary", { text: "Add an event subscription", "data-test": "es-open" }), form));
}

// ---- directory ----------------------------------------------------------------
// Users, groups, applications (Graph) and managed identities and workloads
// (ARM): what a directory administrator manages. Graph and ARM decide
// what this user may do; a refusal shows as their error.
const GRAPH = "/api/graph/v1.0";
function graphNext(page) { const u = page["@odata.nextLink"] ? new URL(page["@odata.nextLink"]) : null; return u ? "/api/graph" + u.pathname + u.search : null; }
// A password for a new user or a reset: 20 random characters of four kinds.
function newPassword() {
  const sets = ["ABCDEFGHJKLMNPQRSTUVWXYZ", "abcdefghijkmnopqrstuvwxyz", "23456789", "!#%+-=?@"];
  const r = crypto.getRandomValues(new Uint32Array(20));
  return Array.from(r, (x, i) => { const set = sets[i % 4]; return set[x % set.length]; }).join("");
}
function oneTimeValue(label, value, test) {
  return el("div", { class: "panel", "data-test": test }, el("p", { text: `${label} — shown once, copy it now:` }),
    el("code", { class: "value", text: value, "data-test": `${test}-value` }), " ",
    el("button", { type: "button", class: "plain", text: "Copy", on: { click: () => navigator.clipboard.writeText(value) } }));
}

async function directoryPage(section, id) {
  crumbs(link("/", "Home"), el("span", { text: "Directory" }));
  const tabs = el("div", { class: "tabs" }, [["users", "Users"], ["groups", "Groups"], ["applications", "Applications"], ["identities", "Managed identities"]].map(([b, t]) =>
    link(`/ui/directory/${b}`, t, { class: b === section ? "on" : "", "data-test": "dir-tab-" + b })));
  const content = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  show(el("h1", { text: "Directory" }), tabs, content);
  try {
    if (section === "groups") await groupsSection(content, id);
    else if (section === "applications") await applicationsSection(content, id);
    else if (section === "identities") await identitiesSection(content);
    else await usersSection(content);
  } catch (e) { content.replaceChildren(errorBox(e)); }
}

async function usersSection(content) {
  const status = el("div");
  const body = el("tbody");
  const filter = el("input", { type: "search", placeholder: "Filter loaded users", "data-test": "user-filter" });
  const more = el("button", { type: "button", class: "plain", text: "Load more" });
  let users = [], next = `${GRAPH}/users?$top=100`;
  // Who is a directory administrator (Graph's directory role assignments).
  const GA = "62e90394-69f5-4237-9190-012177145e10";
  // (Only a directory administrator may list them; others see no role column actions.)
  let admins = new Set(), rolesKnown = true;
  try { admins = new Set(((await api("GET", `${GRAPH}/roleManagement/directory/roleAssignments`)).value || []).map((a) => a.principalId)); } catch (_) { rolesKnown = false; }
  const draw = () => {
    const q = filter.value.toLowerCase();
    body.replaceChildren(...users.filter((u) => !q || (u.displayName || "").toLowerCase().includes(q) || (u.userPrincipalName || "").toLowerCase().includes(q)).map((u) =>
      el("tr", { "data-test": "user-row" }, el("td", { text: u.displayName }), el("td", { text: u.userPrincipalName }),
        el("td", { text: u.accountEnabled === false ? "Disabled" : "Enabled" }),
        el("td", { text: admins.has(u.id) ? "Global Administrator" : "" }),
        el("td", {}, !rolesKnown ? null : actButton(status, admins.has(u.id) ? "Remove admin role" : "Make Global Administrator", admins.has(u.id) ? "revoke-admin" : "grant-admin", async () => {
          if (admins.has(u.id)) {
            if (!window.confirm(`${u.userPrincipalName} stops being a Global Administrator.`)) return;
            await api("DELETE", `${GRAPH}/roleManagement/directory/roleAssignments/${GA}_${u.id}`);
            admins.delete(u.id);
          } else {
            await api("POST", `${GRAPH}/roleManagement/directory/roleAssignments`, { principalId: u.id, roleDefinitionId: GA, directoryScopeId: "/" });
            admins.add(u.id);
          }
          draw();
        }), rolesKnown ? " " : null, actButton(status, "Reset password", "reset-password", async () => {
          const pw = newPassword();
          await api("PATCH", `${GRAPH}/users/${u.id}`, { passwordProfile: { password: pw, forceChangePasswordNextSignIn: false } });
          status.replaceChildren(oneTimeValue(`New password of ${u.userPrincipalName}`, pw, "new-password"));
        }), " ", actButton(status, u.accountEnabled === false ? "Enable" : "Disable", u.accountEnabled === false ? "enable-user" : "disable-user", async () => {
          await api("PATCH", `${GRAPH}/users/${u.id}`, { accountEnabled: u.accountEnabled === false });
          u.accountEnabled = u.accountEnabled === false;
          draw();
        }), " ", actButton(status, "Delete", "delete-user", async () => {
          if (!window.confirm(`Delete ${u.userPrincipalName}?`)) return;
          await api("DELETE", `${GRAPH}/users/${u.id}`);
          users = users.filter((x) => x.id !== u.id);
          draw();
        })))));
    more.hidden = !next;
  };
  const load = async () => {
    if (!next) return;
    const page = await api("GET", next);
    users.push(...(page.value || []));
    next = graphNext(page);
    draw();
  };
  more.addEventListener("click", () => load().catch((e) => status.replaceChildren(errorBox(e))));
  filter.addEventListener("input", draw);
  const domain = (session.upn || "@keyhaven.local").split("@")[1];
  const name = el("input", { required: true, "data-test": "new-user-name" });
  const upn = el("input", { required: true, placeholder: `alex@${domain}`, "data-test": "new-user-upn" });
  const form = el("form", { class: "form", "data-test": "new-user" }, el("label", { text: "Display name" }), name,
    el("label", { text: "User principal name" }), upn, el("span"), el("button", { type: "submit", text: "Create user", "data-test": "new-user-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const pw = newPassword();
      const u = await api("POST", `${GRAPH}/users`, { accountEnabled: true, displayName: name.value, mailNickname: upn.value.split("@")[0],
        userPrincipalName: upn.value, passwordProfile: { password: pw, forceChangePasswordNextSignIn: false } });
      users.unshift(u);
      form.reset();
      draw();
      status.replaceChildren(oneTimeValue(`Password of ${u.userPrincipalName}`, pw, "new-password"));
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  content.replaceChildren(el("div", { class: "bar" }, filter), status,
    el("table", {}, el("thead", {}, el("tr", {}, ["Name", "User principal name", "Status", "Directory role", ""].map((h) => el("th", { text: h })))), body),
    el("div", { class: "bar" }, more), el("h2", { text: "Create a user" }), form);
  await load();
}

async function groupsSection(content, id) {
  const status = el("div");
  const page = await api("GET", `${GRAPH}/groups?$top=999`);
  const groups = page.value || [];
  const detail = el("div");
  const name = el("input", { required: true, "data-test": "new-group-name" });
  const form = el("form", { class: "bar", "data-test": "new-group" }, name, el("button", { type: "submit", text: "Create group", "data-test": "new-group-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const g = await api("POST", `${GRAPH}/groups`, { displayName: name.value, mailEnabled: false, securityEnabled: true,
        mailNickname: name.value.replace(/[^A-Za-z0-9]/g, "").slice(0, 60) || "group" });
      go(`/ui/directory/groups/${g.id}`);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  content.replaceChildren(status, el("table", {}, el("thead", {}, el("tr", {}, ["Group", "Object id"].map((h) => el("th", { text: h })))),
    el("tbody", {}, groups.map((g) => el("tr", { "data-test": "group-row" }, el("td", {}, link(`/ui/directory/groups/${g.id}`, g.displayName, { "data-test": "group-link" })), el("td", { text: g.id }))))),
    el("h2", { text: "Create a group" }), form, detail);
  if (id) await groupDetail(detail, id);
}

async function groupDetail(box, id) {
  const status = el("div");
  const g = await api("GET", `${GRAPH}/groups/${encodeURIComponent(id)}`);
  const members = (await api("GET", `${GRAPH}/groups/${encodeURIComponent(id)}/members?$top=999`)).value || [];
  const again = () => groupDetail(box, id);
  const picker = principalPicker(status, "member");
  const add = actButton(status, "Add member", "add-member", async () => {
    const c = picker.chosen();
    if (!c) throw new ApiError(400, "NoPrincipal", "Choose who to add.");
    await api("POST", `${GRAPH}/groups/${encodeURIComponent(id)}/members/$ref`, { "@odata.id": `${session.graphUrl || "https://graph.invalid"}/v1.0/directoryObjects/${c[1]}` });
    await again();
  });
  box.replaceChildren(el("div", { class: "panel", "data-test": "group-detail" }, el("h2", { text: g.displayName }), status,
    el("table", {}, el("tbody", {}, members.map((m) => el("tr", { "data-test": "member-row" }, el("td", { text: m.displayName || m.id }),
      el("td", { text: m.userPrincipalName || (m["@odata.type"] || "").replace("#microsoft.graph.", "") }),
      el("td", {}, actButton(status, "Remove", "remove-member", async () => {
        await api("DELETE", `${GRAPH}/groups/${encodeURIComponent(id)}/members/${encodeURIComponent(m.id)}/$ref`);
        await again();
      })))))),
    members.length ? null : el("p", { class: "muted", text: "No members." }),
    el("div", { class: "form" }, el("label", { text: "Add" }), picker.who, el("span"), picker.picks, el("span"), add),
    el("div", { class: "bar" }, actButton(status, "Delete group", "delete-group", async () => {
      if (!window.confirm(`Delete ${g.displayName}?`)) return;
      await api("DELETE", `${GRAPH}/groups/${encodeURIComponent(id)}`);
      go("/ui/directory/groups");
    }))));
  await picker.search();
}

async function applicationsSection(content, id) {
  const status = el("div");
  const apps = (await api("GET", `${GRAPH}/applications?$top=999`)).value || [];
  const detail = el("div");
  const name = el("input", { required: true, "data-test": "new-app-name" });
  const form = el("form", { class: "bar", "data-test": "new-app" }, name, el("button", { type: "submit", text: "Register application", "data-test": "new-app-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const a = await api("POST", `${GRAPH}/applications`, { displayName: name.value });
      // Its service principal, so it can sign in and hold roles.
      await api("POST", `${GRAPH}/servicePrincipals`, { appId: a.appId });
      go(`/ui/directory/applications/${a.id}`);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  content.replaceChildren(status, el("table", {}, el("thead", {}, el("tr", {}, ["Application", "Application (client) id"].map((h) => el("th", { text: h })))),
    el("tbody", {}, apps.map((a) => el("tr", { "data-test": "app-row" }, el("td", {}, link(`/ui/directory/applications/${a.id}`, a.displayName, { "data-test": "app-link" })), el("td", { text: a.appId }))))),
    el("h2", { text: "Register an application" }), form, detail);
  if (id) await applicationDetail(detail, id);
}

async function applicationDetail(box, id, notice) {
  const status = el("div", {}, notice || null);
  const base = `${GRAPH}/applications/${encodeURIComponent(id)}`;
  const a = await api("GET", base);
  let fics = [];
  try { fics = (await api("GET", `${base}/federatedIdentityCredentials`)).value || []; } catch (_) { fics = []; }
  const again = () => applicationDetail(box, id);
  const secretName = el("input", { placeholder: "Description", "data-test": "new-app-secret-name" });
  const addSecret = actButton(status, "New client secret", "new-app-secret", async () => {
    const r = await api("POST", `${base}/addPassword`, { passwordCredential: { displayName: secretName.value || "portal" } });
    await applicationDetail(box, id, oneTimeValue(`Client secret ${r.displayName || ""} (hint ${r.hint})`, r.secretText, "app-secret"));
  });
  const ficName = el("input", { placeholder: "name", "data-test": "fic-name" });
  const ficIssuer = el("input", { placeholder: "https://token.actions.githubusercontent.com", "data-test": "fic-issuer" });
  const ficSubject = el("input", { placeholder: "repo:org/repo:ref:refs/heads/main", "data-test": "fic-subject" });
  const addFic = actButton(status, "Add federated credential", "fic-add", async () => {
    await api("POST", `${base}/federatedIdentityCredentials`, { name: ficName.value, issuer: ficIssuer.value, subject: ficSubject.value, audiences: ["api://AzureADTokenExchange"] });
    await again();
  });
  box.replaceChildren(el("div", { class: "panel", "data-test": "app-detail" }, el("h2", { text: a.displayName }),
    el("dl", { class: "props" }, [["Application (client) id", a.appId], ["Object id", a.id]].flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v, "data-test": "app-" + k.split(" ")[0].toLowerCase() })])),
    status,
    el("h2", { text: "Client secrets" }),
    el("table", {}, el("tbody", {}, (a.passwordCredentials || []).map((c) => el("tr", { "data-test": "app-secret-row" }, el("td", { text: c.displayName || "" }),
      el("td", { text: (c.hint || "") + "…" }), el("td", { text: c.endDateTime || "" }),
      el("td", {}, actButton(status, "Delete", "remove-app-secret", async () => { await api("POST", `${base}/removePassword`, { keyId: c.keyId }); await again(); })))))),
    el("div", { class: "bar" }, secretName, addSecret),
    el("h2", { text: "Certificates" }),
    (a.keyCredentials || []).length ? el("ul", {}, a.keyCredentials.map((k) => el("li", { text: `${k.displayName || k.keyId} (${k.type}, until ${k.endDateTime || "?"})` })))
      : el("p", { class: "muted", text: "No certificates (upload one with az ad app credential reset --cert)." }),
    el("h2", { text: "Federated credentials" }),
    el("table", {}, el("tbody", {}, fics.map((f) => el("tr", { "data-test": "fic-row" }, el("td", { text: f.name }), el("td", { text: f.issuer }), el("td", { text: f.subject }),
      el("td", {}, actButton(status, "Delete", "fic-delete", async () => { await api("DELETE", `${base}/federatedIdentityCredentials/${encodeURIComponent(f.id)}`); await again(); })))))),
    el("div", { class: "bar" }, ficName, ficIssuer, ficSubject, addFic),
    el("div", { class: "bar" }, actButton(status, "Delete application", "delete-app", async () => {
      if (!window.confirm(`Delete ${a.displayName} and its service principal?`)) return;
      await api("DELETE", base);
      go("/ui/directory/applications");
    }))));
}

// User-assigned managed identities and workloads of one resource group.
async function identitiesSection(content) {
  const status = el("div");
  const subs = (await api("GET", "/api/arm/subscriptions?api-version=2022-12-01")).value || [];
  const sub = (subs[0] || {}).subscriptionId;
  if (!sub) { content.replaceChildren(el("p", { class: "muted", text: "No subscription you can see." })); return; }
  let groups = [];
  try { groups = (await api("GET", `/api/arm/subscriptions/${sub}/resourcegroups?api-version=2022-09-01`)).value || []; } catch (e) { status.replaceChildren(errorBox(e)); }
  const rg = el("select", { "data-test": "mi-group" }, groups.map((g) => el("option", { value: g.name, text: g.name })));
  const list = el("div");
  const draw = async () => {
    status.replaceChildren();
    const g = `/subscriptions/${sub}/resourceGroups/${encodeURIComponent(rg.value)}/providers`;
    const ids = (await api("GET", armId(`${g}/Microsoft.ManagedIdentity/userAssignedIdentities?api-version=2023-01-31`))).value || [];
    const wls = (await api("GET", armId(`${g}/Keyhaven.Compute/workloads?api-version=2026-01-01`))).value || [];
    const iname = el("input", { required: true, pattern: "[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}", placeholder: "identity name", "data-test": "new-mi-name" });
    const iform = el("form", { class: "bar", "data-test": "new-mi" }, iname, el("button", { type: "submit", text: "Create identity", "data-test": "new-mi-submit" }));
    iform.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      try { await api("PUT", armId(`${g}/Microsoft.ManagedIdentity/userAssignedIdentities/${encodeURIComponent(iname.value)}?api-version=2023-01-31`), { location: "local" }); await draw(); }
      catch (e) { status.replaceChildren(errorBox(e)); }
    });
    const wname = el("input", { required: true, placeholder: "workload name", "data-test": "new-wl-name" });
    const waddr = el("input", { required: true, placeholder: "source addresses: 10.0.0.4, 10.0.0.5", "data-test": "new-wl-addresses" });
    const wsys = el("input", { type: "checkbox", "data-test": "new-wl-system" });
    const wuser = el("select", { multiple: true, "data-test": "new-wl-identities" }, ids.map((i) => el("option", { value: i.id, text: i.name })));
    const wform = el("form", { class: "form", "data-test": "new-wl" }, el("label", { text: "Name" }), wname, el("label", { text: "Source addresses" }), waddr,
      el("label", { text: "System-assigned identity" }), wsys, el("label", { text: "User-assigned identities" }), wuser,
      el("span"), el("button", { type: "submit", text: "Create workload", "data-test": "new-wl-submit" }));
    wform.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const users = Array.from(wuser.selectedOptions, (o) => o.value);
      const kinds = [wsys.checked ? "SystemAssigned" : null, users.length ? "UserAssigned" : null].filter(Boolean);
      const body = { location: "local", properties: { addresses: waddr.value.split(",").map((x) => x.trim()).filter(Boolean) } };
      if (kinds.length) body.identity = { type: kinds.join(", "), userAssignedIdentities: Object.fromEntries(users.map((u) => [u, {}])) };
      try { await api("PUT", armId(`${g}/Keyhaven.Compute/workloads/${encodeURIComponent(wname.value)}?api-version=2026-01-01`), body); await draw(); }
      catch (e) { status.replaceChildren(errorBox(e)); }
    });
    list.replaceChildren(
      el("h2", { text: "User-assigned managed identities" }),
      el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Client id", "Principal (object) id", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, ids.map((i) => el("tr", { "data-test": "mi-row" }, el("td", { text: i.name }), el("td", { text: i.properties.clientId }), el("td", { text: i.properties.principalId }),
          el("td", {}, actButton(status, "Delete", "mi-delete", async () => { await api("DELETE", armId(`${i.id}?api-version=2023-01-31`)); await draw(); })))))),
      iform,
      el("h2", { text: "Workloads" }),
      el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Source addresses", "Identities", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, wls.map((w) => el("tr", { "data-test": "wl-row" }, el("td", { text: w.name }), el("td", { text: (w.properties.addresses || []).join(", ") }),
          el("td", { text: w.identity ? [w.identity.principalId ? "system: " + w.identity.principalId : null, ...Object.keys(w.identity.userAssignedIdentities || {}).map((x) => x.split("/").pop())].filter(Boolean).join(", ") : "none" }),
          el("td", {}, actButton(status, "Delete", "wl-delete", async () => { await api("DELETE", armId(`${w.id}?api-version=2026-01-01`)); await draw(); })))))),
      el("details", {}, el("summary", { text: "Create a workload", "data-test": "new-wl-open" }), wform));
  };
  rg.addEventListener("change", () => draw().catch((e) => status.replaceChildren(errorBox(e))));
  content.replaceChildren(el("div", { class: "bar" }, el("span", { class: "muted", text: "Resource group:" }), rg), status, list);
  if (groups.length) await draw();
}

// ---- a paged list of one object kind ----------------------------------------
// Rows of `collection` ("keys", "certificates"), 25 at a time, filterable;
// `columns` maps an item to its cells; a click on a name calls `open`.
function pagedList(vault, collection, headers, columns, open) {
  const body = el("tbody");
  const status = el("div");
  const filter = el("input", { type: "search", placeholder: `Filter loaded ${collection} by name`, "data-test": `${collection}-filter` });
  const more = el("button", { class: "plain", type: "button", text: "Load more" });
  const first = `/api/vault/${encodeURIComponent(vault)}/${collection}?${KV_API}&maxresults=25`;
  let items = [], next = first;
  const draw = () => {
    const q = filter.value.toLowerCase();
    body.replaceChildren(...items.filter((x) => !q || x.name.toLowerCase().includes(q)).map((x) =>
      el("tr", { "data-test": `${collection}-row` },
        el("td", {}, el("a", { href: "#", "data-test": `${collection}-link`, on: { click: (ev) => { ev.preventDefault(); open(x.name); } } }, x.name)),
        ...columns(x).map((c) => el("td", { text: c })))));
    more.hidden = !next;
  };
  const load = async () => {
    if (!next) return;
    try {
      const page = await api("GET", next);
      // Keys name themselves by `kid`, the others by `id`.
      for (const x of page.value || []) items.push(Object.assign({ name: (x.id || x.kid).split(`/${collection}/`)[1].split("/")[0] }, x));
      next = page.nextLink ? portalPath(page.nextLink, vault) : null;
    } catch (e) { next = null; status.replaceChildren(errorBox(e)); }
    draw();
  };
  more.addEventListener("click", load);
  filter.addEventListener("input", draw);
  const reload = async () => { items = []; next = first; status.replaceChildren(); await load(); };
  const node = el("div", {}, el("div", { class: "bar" }, filter), status,
    el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))), body),
    el("div", { class: "bar" }, more));
  return { node, reload };
}

function download(name, mime, base64) {
  return el("a", { href: `data:${mime};base64,${base64}`, download: name, class: "button-link", "data-test": "download-" + name.split(".").pop() }, "Download " + name.split(".").pop().toUpperCase());
}
function b64urlToBytes(s) {
  const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
  return Uint8Array.from(b, (c) => c.charCodeAt(0));
}
function hex(bytes, sep) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0").toUpperCase()).join(sep || ""); }

// ---- keys ------------------------------------------------------------------
async function keysBlade(content, vault) {
  const detail = el("div");
  const list = pagedList(vault, "keys", ["Name", "Status", "Updated", "Expires"],
    (k) => [k.attributes && k.attributes.enabled === false ? "Disabled" : "Enabled", isoTime(k.attributes && k.attributes.updated), isoTime(k.attributes && k.attributes.exp)],
    (name) => keyDetail(detail, vault, name, list.reload));
  const status = el("div");
  const deletedBox = el("div");
  const name = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "new-key-name" });
  const types = ["RSA 2048", "RSA 3072", "RSA 4096", "EC P-256", "EC P-384", "EC P-521", "EC P-256K"];
  // HSM-protected keys where the vault can hold them (premium); the API
  // answers for a standard vault.
  const kty = el("select", { "data-test": "new-key-type" }, [...types, ...types.map((t) => t.replace(" ", "-HSM "))].map((o) => el("option", { text: o })));
  const exp = el("input", { type: "datetime-local", "data-test": "new-key-exp" });
  const form = el("form", { class: "form", "data-test": "new-key" },
    el("label", { text: "Name" }), name, el("label", { text: "Type" }), kty,
    el("label", { text: "Expiration date (UTC)" }), exp,
    el("span"), el("button", { type: "submit", text: "Create", "data-test": "new-key-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const [t, size] = kty.value.split(" ");
    const body = t.startsWith("RSA") ? { kty: t, key_size: Number(size) } : { kty: t, crv: size };
    if (exp.value) body.attributes = { exp: epoch(exp) };
    try {
      const n = name.value;
      await api("POST", `/api/vault/${encodeURIComponent(vault)}/keys/${encodeURIComponent(n)}/create?${KV_API}`, body);
      form.reset();
      await list.reload();
      await keyDetail(detail, vault, n, list.reload);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  content.replaceChildren(list.node, detail, el("h2", { text: "Create a key" }), status, form,
    restoreForm("keys", vault, status, list.reload), deletedToggle(deletedBox, vault, "keys", list.reload), deletedBox);
  await list.reload();
}

// The public key as PEM (SubjectPublicKeyInfo), through WebCrypto: import
// the public JWK, export it as SPKI.
async function publicKeyPem(j) {
  let alg;
  if (j.kty.startsWith("RSA")) alg = { name: "RSA-OAEP", hash: "SHA-256" };
  else if (["P-256", "P-384", "P-521"].includes(j.crv)) alg = { name: "ECDSA", namedCurve: j.crv };
  else return null;   // P-256K: not a WebCrypto curve
  const pub = j.kty.startsWith("RSA") ? { kty: "RSA", n: j.n, e: j.e, ext: true } : { kty: "EC", crv: j.crv, x: j.x, y: j.y, ext: true };
  const k = await crypto.subtle.importKey("jwk", pub, alg, true, alg.name === "ECDSA" ? ["verify"] : ["encrypt"]);
  const b64 = bytesBase64(new Uint8Array(await crypto.subtle.exportKey("spki", k)));
  return "-----BEGIN PUBLIC KEY-----\n" + b64.match(/.{1,64}/g).join("\n") + "\n-----END PUBLIC KEY-----\n";
}

async function keyDetail(detail, vault, name, changed) {
  const path = `/api/vault/${encodeURIComponent(vault)}/keys/${encodeURIComponent(name)}`;
  detail.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const k = await api("GET", `${path}?${KV_API}`);
    const j = k.key || {};
    const status = el("div");
    const redraw = async () => { await keyDetail(detail, vault, name, changed); if (changed) await changed(); };
    const versions = await versionsTable("keys", vault, name, status, redraw);
    const size = j.n ? String(b64urlToBytes(j.n).length * 8) + " bits" : (j.crv || "");
    const jwk = utf8Base64(JSON.stringify(Object.fromEntries(Object.entries(j).filter(([x]) => ["kid", "kty", "n", "e", "crv", "x", "y", "key_ops"].includes(x))), null, 2));
    let pem = null;
    try { pem = await publicKeyPem(j); } catch (_) { pem = null; }
    const rotate = actButton(status, "Rotate now", "rotate-key", async () => {
      await api("POST", `${path}/rotate?${KV_API}`);
      await redraw();
    });
    detail.replaceChildren(el("div", { class: "panel", "data-test": "key-detail" },
      el("h2", { text: name }),
      el("dl", { class: "props" }, [
        ["Key type", j.kty], ["Size / curve", size], ["Operations", (j.key_ops || []).join(", ")],
        ["Enabled", k.attributes.enabled === false ? "No" : "Yes"], ["Created", isoTime(k.attributes.created)],
        ["Expires", isoTime(k.attributes.exp) || "Never"], ["Key identifier", j.kid],
      ].flatMap(([a, b]) => [el("dt", { text: a }), el("dd", { text: b || "", "data-test": "key-" + a.toLowerCase().replace(/[^a-z]+/g, "-") })])),
      el("div", { class: "bar" }, download(`${name}.jwk.json`, "application/json", jwk),
        pem ? download(`${name}.pem`, "application/x-pem-file", utf8Base64(pem)) : null, rotate,
        backupButton("keys", vault, name, status), deleteButton("keys", vault, name, status, detail, changed)),
      status, versions,
      el("h2", { text: "Rotation policy" }), await rotationPolicyEditor(path, status)));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
}

// A key's rotation policy: rotate some time after creation or before
// expiry, notify before expiry, and the expiry new versions get (ISO 8601
// durations, as Azure takes them).
async function rotationPolicyEditor(path, status) {
  let p = {};
  try { p = await api("GET", `${path}/rotationpolicy?${KV_API}`); } catch (e) { return errorBox(e); }
  const actions = p.lifetimeActions || [];
  const find = (type) => actions.find((a) => a.action && a.action.type.toLowerCase() === type) || null;
  const rot = find("rotate"), notify = find("notify");
  const when = el("select", { "data-test": "rotate-when" }, el("option", { value: "", text: "Never (manual only)" }),
    el("option", { value: "timeAfterCreate", text: "Time after creation" }), el("option", { value: "timeBeforeExpiry", text: "Time before expiry" }));
  when.value = rot ? (rot.trigger.timeAfterCreate ? "timeAfterCreate" : "timeBeforeExpiry") : "";
  const period = el("input", { placeholder: "P90D", value: rot ? (rot.trigger.timeAfterCreate || rot.trigger.timeBeforeExpiry) : "", "data-test": "rotate-period" });
  const notifyBefore = el("input", { placeholder: "P30D", value: notify ? notify.trigger.timeBeforeExpiry : "", "data-test": "notify-before" });
  const expiry = el("input", { placeholder: "P2Y", value: (p.attributes && p.attributes.expiryTime) || "", "data-test": "policy-expiry" });
  const form = el("form", { class: "form", "data-test": "rotation-policy" },
    el("label", { text: "Rotate automatically" }), when, el("label", { text: "Period" }), period,
    el("label", { text: "Notify before expiry" }), notifyBefore, el("label", { text: "New versions expire after" }), expiry,
    el("span"), el("button", { type: "submit", text: "Save policy", "data-test": "rotation-save" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const lifetimeActions = [];
    if (when.value) lifetimeActions.push({ trigger: { [when.value]: period.value.trim() }, action: { type: "Rotate" } });
    if (notifyBefore.value.trim()) lifetimeActions.push({ trigger: { timeBeforeExpiry: notifyBefore.value.trim() }, action: { type: "Notify" } });
    const body = { lifetimeActions, attributes: expiry.value.trim() ? { expiryTime: expiry.value.trim() } : {} };
    try {
      await api("PUT", `${path}/rotationpolicy?${KV_API}`, body);
      status.replaceChildren(el("p", { class: "ok", text: "Rotation policy saved.", "data-test": "rotation-saved" }));
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return form;
}

// ---- certificates ------------------------------------------------------------
async function certificatesBlade(content, vault) {
  const base = `/api/vault/${encodeURIComponent(vault)}/certificates`;
  const detail = el("div");
  const list = pagedList(vault, "certificates", ["Name", "Thumbprint", "Status", "Expires"],
    (c) => [c.x5t ? hex(b64urlToBytes(c.x5t)) : "", c.attributes && c.attributes.enabled === false ? "Disabled" : "Enabled", isoTime(c.attributes && c.attributes.exp)],
    (name) => certificateDetail(detail, vault, name, list.reload));
  const status = el("div");
  const deletedBox = el("div");
  const authorities = el("div");
  let issuers = [];
  try { issuers = ((await api("GET", `${base}/issuers?${KV_API}`)).value || []).map((i) => i.id.split("/issuers/")[1]); } catch (_) { issuers = []; }
  const name = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "new-cert-name" });
  const subject = el("input", { required: true, value: "CN=example.test", "data-test": "new-cert-subject" });
  const dns = el("input", { placeholder: "a.example.test, b.example.test", "data-test": "new-cert-dns" });
  const issuer = el("select", { "data-test": "new-cert-issuer" }, el("option", { value: "Self", text: "Self-signed" }),
    el("option", { value: "Unknown", text: "An external CA (a CSR to be merged)" }), issuers.map((i) => el("option", { value: i, text: `Issuer: ${i}` })));
  const ktype = el("select", { "data-test": "new-cert-key" }, ["RSA 2048", "RSA 3072", "RSA 4096", "EC P-256", "EC P-384", "EC P-521"].map((o) => el("option", { text: o })));
  const months = el("input", { type: "number", min: 1, max: 1200, value: 12, "data-test": "new-cert-months" });
  const format = el("select", { "data-test": "new-cert-format" }, el("option", { value: "application/x-pkcs12", text: "PKCS #12 (PFX)" }), el("option", { value: "application/x-pem-file", text: "PEM" }));
  const submit = el("button", { type: "submit", text: "Create", "data-test": "new-cert-submit" });
  const form = el("form", { class: "form", "data-test": "new-cert" },
    el("label", { text: "Name" }), name, el("label", { text: "Issuer" }), issuer, el("label", { text: "Subject" }), subject,
    el("label", { text: "DNS names" }), dns, el("label", { text: "Key" }), ktype, el("label", { text: "Validity (months)" }), months,
    el("label", { text: "Content type" }), format, el("span"), submit);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const names = dns.value.split(",").map((x) => x.trim()).filter(Boolean);
    const [kty, size] = ktype.value.split(" ");
    const policy = { issuer: { name: issuer.value }, x509_props: { subject: subject.value, validity_months: Number(months.value) },
      key_props: kty === "RSA" ? { kty, key_size: Number(size), exportable: true, reuse_key: false } : { kty, crv: size, exportable: true, reuse_key: false },
      secret_props: { contentType: format.value } };
    if (names.length) policy.x509_props.sans = { dns_names: names };
    submit.disabled = true;
    try {
      const n = name.value;
      await api("POST", `${base}/${encodeURIComponent(n)}/create?${KV_API}`, { policy });
      form.reset();
      await list.reload();
      await certificateDetail(detail, vault, n, list.reload);
    } catch (e) { status.replaceChildren(errorBox(e)); }
    submit.disabled = false;
  });
  content.replaceChildren(list.node, detail, el("h2", { text: "Create a certificate" }), status, form,
    el("h2", { text: "Import a certificate" }), importCertificateForm(vault, async (n) => { await list.reload(); await certificateDetail(detail, vault, n, list.reload); }),
    restoreForm("certificates", vault, status, list.reload), deletedToggle(deletedBox, vault, "certificates", list.reload), deletedBox,
    el("div", { class: "bar" }, el("button", { type: "button", class: "plain", text: "Certificate authorities and contacts", "data-test": "show-authorities",
      on: { click: () => authoritiesPanel(authorities, vault).catch((e) => authorities.replaceChildren(errorBox(e))) } })), authorities);
  await list.reload();
}

// Import a PFX (with its password) or a PEM file holding the certificate
// and its private key.
function importCertificateForm(vault, imported) {
  const status = el("div");
  const name = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "import-cert-name" });
  const file = el("input", { type: "file", accept: ".pfx,.p12,.pem,.crt", required: true, "data-test": "import-cert-file" });
  const pwd = el("input", { type: "password", autocomplete: "off", "data-test": "import-cert-password" });
  const form = el("form", { class: "form", "data-test": "import-cert" },
    el("label", { text: "Name" }), name, el("label", { text: "PFX or PEM file" }), file,
    el("label", { text: "Password (PFX)" }), pwd, el("span"), el("button", { type: "submit", text: "Import", "data-test": "import-cert-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      const bytes = new Uint8Array(await file.files[0].arrayBuffer());
      const head = new TextDecoder().decode(bytes.slice(0, 64));
      const pem = head.includes("-----BEGIN");
      const body = { value: pem ? new TextDecoder().decode(bytes) : bytesBase64(bytes),
        policy: { secret_props: { contentType: pem ? "application/x-pem-file" : "application/x-pkcs12" } } };
      if (pwd.value) body.pwd = pwd.value;
      const n = name.value;
      await api("POST", `/api/vault/${encodeURIComponent(vault)}/certificates/${encodeURIComponent(n)}/import?${KV_API}`, body);
      form.reset();
      await imported(n);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return el("div", {}, status, form);
}

async function certificateDetail(detail, vault, name, changed) {
  const path = `/api/vault/${encodeURIComponent(vault)}/certificates/${encodeURIComponent(name)}`;
  detail.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const status = el("div");
    const redraw = async () => { await certificateDetail(detail, vault, name, changed); if (changed) await changed(); };
    let c;
    try { c = await api("GET", `${path}?${KV_API}`); } catch (e) {
      // A request still pending (an external CA's CSR) has no certificate yet.
      if (e.status !== 404 && e.code !== "CertificateNotFound") throw e;
      c = null;
    }
    const pendingBox = el("div");
    await pendingPanel(pendingBox, path, status, redraw);
    if (!c || !c.cer) {
      detail.replaceChildren(el("div", { class: "panel", "data-test": "cert-detail" }, el("h2", { text: name }), status, pendingBox));
      return;
    }
    const der = Uint8Array.from(atob(c.cer), (x) => x.charCodeAt(0));
    const x = parseCertificate(der);
    const sha256 = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", der)));
    const sha1 = c.x5t ? hex(b64urlToBytes(c.x5t)) : "";
    const pem = btoa("-----BEGIN CERTIFICATE-----\n" + c.cer.match(/.{1,64}/g).join("\n") + "\n-----END CERTIFICATE-----\n");
    const ctype = (c.policy && c.policy.secret_props && c.policy.secret_props.contentType) || "";
    const rows = [
      ["Subject", x.subject], ["Issuer", x.issuer], ["Serial number", x.serial],
      ["Subject alternative names", x.sans.join(", ")], ["Not before", x.notBefore], ["Not after", x.notAfter],
      ["Key", x.key], ["SHA-1 thumbprint", sha1], ["SHA-256 thumbprint", sha256],
      ["Content type", ctype],
      ["Issuer (policy)", (c.policy && c.policy.issuer && c.policy.issuer.name) || ""],
      ["Certificate identifier", c.id],
    ];
    // With the private key: the certificate's secret, so only for a caller
    // allowed to get secrets (the audited SecretGet); the API says no otherwise.
    const withKey = actButton(status, ctype === "application/x-pem-file" ? "Download PEM with private key" : "Download PFX", "download-with-key", async () => {
      const sec = await api("GET", `/api/vault/${encodeURIComponent(vault)}/secrets/${encodeURIComponent(name)}?${KV_API}`);
      const pemFile = sec.contentType === "application/x-pem-file";
      status.replaceChildren(el("a", { class: "button-link", "data-test": "key-file", download: pemFile ? `${name}.pem` : `${name}.pfx`,
        href: pemFile ? `data:application/x-pem-file;base64,${utf8Base64(sec.value)}` : `data:application/x-pkcs12;base64,${sec.value}` },
        pemFile ? `Save ${name}.pem` : `Save ${name}.pfx`));
    });
    const versions = await versionsTable("certificates", vault, name, status, redraw);
    detail.replaceChildren(el("div", { class: "panel", "data-test": "cert-detail" },
      el("h2", { text: name }),
      el("dl", { class: "props" }, rows.flatMap(([a, b]) => [el("dt", { text: a }), el("dd", { text: b, "data-test": "cert-" + a.toLowerCase().replace(/[^a-z0-9]+/g, "-") })])),
      el("div", { class: "bar" }, download(`${name}.cer`, "application/pkix-cert", c.cer), download(`${name}.pem`, "application/x-pem-file", pem), withKey,
        backupButton("certificates", vault, name, status), deleteButton("certificates", vault, name, status, detail, changed)),
      status, versions, pendingBox,
      el("details", {}, el("summary", { text: "Issuance policy", "data-test": "policy-open" }), await policyEditor(path, status))));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
}

// The certificate's policy as JSON, editable (PATCH of the policy: what the
// next version is issued with, and the lifetime actions).
async function policyEditor(path, status) {
  let p;
  try { p = await api("GET", `${path}/policy?${KV_API}`); } catch (e) { return errorBox(e); }
  for (const k of ["id", "attributes"]) delete p[k];
  const text = el("textarea", { rows: 16, cols: 80, class: "mono", "data-test": "policy-json" });
  text.value = JSON.stringify(p, null, 2);
  const form = el("form", {}, text, el("div", { class: "bar" }, el("button", { type: "submit", text: "Save policy", "data-test": "policy-save" })));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try {
      let body;
      try { body = JSON.parse(text.value); } catch (err) { throw new ApiError(400, "BadParameter", "The policy is not valid JSON: " + err.message); }
      await api("PATCH", `${path}/policy?${KV_API}`, body);
      status.replaceChildren(el("p", { class: "ok", text: "Policy saved.", "data-test": "policy-saved" }));
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return form;
}

// A pending certificate operation: its status, the CSR to take to an
// external CA, merge of what the CA signed, cancel or delete.
async function pendingPanel(box, path, status, redraw) {
  let op;
  try { op = await api("GET", `${path}/pending?${KV_API}`); } catch (e) {
    if (e.status === 404) return;
    box.replaceChildren(errorBox(e));
    return;
  }
  if (op.status === "completed") return;
  const parts = [el("h2", { text: "Certificate operation" }),
    el("dl", { class: "props" }, [["Status", op.status], ["Issuer", op.issuer && op.issuer.name], ["Details", op.status_details || ""],
      ["Error", op.error ? `${op.error.code}: ${op.error.message}` : ""]].flatMap(([a, b]) => [el("dt", { text: a }), el("dd", { text: b || "", "data-test": "op-" + a.toLowerCase() })]))];
  if (op.status === "inProgress" && op.csr) {
    const csrPem = "-----BEGIN CERTIFICATE REQUEST-----\n" + op.csr.match(/.{1,64}/g).join("\n") + "\n-----END CERTIFICATE REQUEST-----\n";
    const file = el("input", { type: "file", accept: ".cer,.crt,.pem,.p7b", "data-test": "merge-file" });
    const merge = actButton(status, "Merge signed certificate", "merge", async () => {
      if (!file.files.length) throw new ApiError(400, "BadParameter", "Choose the certificate the CA signed.");
      const bytes = new Uint8Array(await file.files[0].arrayBuffer());
      const txt = new TextDecoder().decode(bytes);
      // PEM: every certificate in the file, leaf first; otherwise one DER.
      const x5c = txt.includes("-----BEGIN CERTIFICATE-----")
        ? [...txt.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)].map((m) => m[1].replace(/\s+/g, ""))
        : [bytesBase64(bytes)];
      await api("POST", `${path}/pending/merge?${KV_API}`, { x5c });
      await redraw();
    });
    parts.push(el("div", { class: "bar" }, download("request.csr", "application/pkcs10", utf8Base64(csrPem)), file, merge,
      actButton(status, "Cancel request", "cancel-operation", async () => { await api("PATCH", `${path}/pending?${KV_API}`, { cancellation_requested: true }); await redraw(); })));
  } else {
    parts.push(el("div", { class: "bar" }, actButton(status, "Delete operation record", "delete-operation", async () => { await api("DELETE", `${path}/pending?${KV_API}`); await redraw(); })));
  }
  box.replaceChildren(el("div", { "data-test": "cert-operation" }, ...parts));
}

// The vault's certificate issuers (the private CA, or stored others) and
// the contacts told about expiring certificates.
async function authoritiesPanel(box, vault) {
  const base = `/api/vault/${encodeURIComponent(vault)}/certificates`;
  const status = el("div");
  const again = () => authoritiesPanel(box, vault);
  const issuers = (await api("GET", `${base}/issuers?${KV_API}`)).value || [];
  let contacts = [];
  try { contacts = (await api("GET", `${base}/contacts?${KV_API}`)).contacts || []; } catch (e) { if (e.status !== 404) throw e; }
  const iname = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", placeholder: "Issuer name", "data-test": "new-issuer-name" });
  const provider = el("input", { required: true, value: "Keyhaven-PrivateCA", "data-test": "new-issuer-provider" });
  const iform = el("form", { class: "bar", "data-test": "new-issuer" }, iname, provider, el("button", { type: "submit", class: "plain", text: "Add issuer", "data-test": "new-issuer-submit" }));
  iform.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try { await api("PUT", `${base}/issuers/${encodeURIComponent(iname.value)}?${KV_API}`, { provider: provider.value }); await again(); } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  const email = el("input", { type: "email", required: true, placeholder: "team@example.test", "data-test": "new-contact-email" });
  const cform = el("form", { class: "bar", "data-test": "new-contact" }, email, el("button", { type: "submit", class: "plain", text: "Add contact", "data-test": "new-contact-submit" }));
  const putContacts = async (list) => {
    if (list.length) await api("PUT", `${base}/contacts?${KV_API}`, { contacts: list });
    else await api("DELETE", `${base}/contacts?${KV_API}`);
    await again();
  };
  cform.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    try { await putContacts([...contacts, { email: email.value }]); } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  box.replaceChildren(el("div", { class: "panel", "data-test": "authorities" }, el("h2", { text: "Certificate issuers" }), status,
    el("table", {}, el("tbody", {}, issuers.map((i) => {
      const n = i.id.split("/issuers/")[1];
      return el("tr", { "data-test": "issuer-row" }, el("td", { text: n }), el("td", { text: i.provider }),
        el("td", {}, actButton(status, "Remove", "remove-issuer", async () => { await api("DELETE", `${base}/issuers/${encodeURIComponent(n)}?${KV_API}`); await again(); })));
    }))), iform,
    el("h2", { text: "Certificate contacts" }),
    el("ul", {}, contacts.map((c, i) => el("li", { "data-test": "contact-row" }, c.email || c.name || "", " ",
      actButton(status, "Remove", "remove-contact", () => putContacts(contacts.filter((_, j) => j !== i)))))),
    cform));
}

// A small DER reader for what the details show (RFC 5280 certificates).
function der(bytes, at) {
  const tag = bytes[at];
  let len = bytes[at + 1], off = at + 2;
  if (len & 0x80) { const n = len & 0x7f; len = 0; for (let i = 0; i < n; i++) len = len * 256 + bytes[off + i]; off += n; }
  return { tag, start: at, body: off, end: off + len };
}
function children(bytes, node) {
  const out = [];
  for (let at = node.body; at < node.end;) { const c = der(bytes, at); out.push(c); at = c.end; }
  return out;
}
function oid(bytes, node) {
  const b = bytes.slice(node.body, node.end);
  const parts = [Math.floor(b[0] / 40), b[0] % 40];
  let v = 0;
  for (let i = 1; i < b.length; i++) { v = v * 128 + (b[i] & 0x7f); if (!(b[i] & 0x80)) { parts.push(v); v = 0; } }
  return parts.join(".");
}
const text = (bytes, node) => new TextDecoder().decode(bytes.slice(node.body, node.end));
const NAMES = { "2.5.4.3": "CN", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST", "2.5.4.10": "O", "2.5.4.11": "OU", "1.2.840.113549.1.9.1": "E" };
function dn(bytes, node) {
  return children(bytes, node).map((set) => children(bytes, set).map((atv) => {
    const [o, v] = children(bytes, atv);
    return (NAMES[oid(bytes, o)] || oid(bytes, o)) + "=" + text(bytes, v);
  }).join("+")).reverse().join(", ");
}
function time(bytes, node) {
  let s = text(bytes, node);
  if (node.tag === 0x17) s = (Number(s.slice(0, 2)) < 50 ? "20" : "19") + s;
  return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}T${s.slice(8, 10)}:${s.slice(10, 12)}:${s.slice(12, 14)}Z`;
}
const CURVES = { "1.2.840.10045.3.1.7": "P-256", "1.3.132.0.34": "P-384", "1.3.132.0.35": "P-521" };
function parseCertificate(bytes) {
  const tbs = children(bytes, der(bytes, 0))[0];
  let f = children(bytes, tbs);
  if (f[0].tag === 0xa0) f = f.slice(1);
  const [serial, , issuer, validity, subject, spki, ...rest] = f;
  const [nb, na] = children(bytes, validity);
  const [alg] = children(bytes, spki);
  const [algOid, param] = children(bytes, alg);
  let key = oid(bytes, algOid);
  if (key === "1.2.840.113549.1.1.1") {
    const bits = children(bytes, spki)[1];
    const rsa = children(bytes, der(bytes, bits.body + 1));
    let n = bytes.slice(rsa[0].body, rsa[0].end);
    if (n[0] === 0) n = n.slice(1);
    key = `RSA ${n.length * 8} bits`;
  } else if (key === "1.2.840.10045.2.1") key = "EC " + (CURVES[oid(bytes, param)] || oid(bytes, param));
  const sans = [];
  const ext = rest.find((e) => e.tag === 0xa3);
  if (ext) {
    for (const e of children(bytes, children(bytes, ext)[0])) {
      const parts = children(bytes, e);
      if (oid(bytes, parts[0]) !== "2.5.29.17") continue;
      const names = der(bytes, parts[parts.length - 1].body);
      for (const g of children(bytes, names)) {
        const v = bytes.slice(g.body, g.end);
        if (g.tag === 0x82) sans.push("DNS:" + text(bytes, g));
        else if (g.tag === 0x81) sans.push("email:" + text(bytes, g));
        else if (g.tag === 0x86) sans.push("URI:" + text(bytes, g));
        else if (g.tag === 0x87 && v.length === 4) sans.push("IP:" + v.join("."));
        else if (g.tag === 0x87 && v.length === 16) sans.push("IP:" + Array.from({ length: 8 }, (_, i) => ((v[2 * i] << 8) | v[2 * i + 1]).toString(16)).join(":"));
      }
    }
  }
  let sn = bytes.slice(serial.body, serial.end);
  while (sn.length > 1 && sn[0] === 0) sn = sn.slice(1);
  return { serial: hex(sn), issuer: dn(bytes, issuer), subject: dn(bytes, subject),
    notBefore: time(bytes, nb), notAfter: time(bytes, na), key, sans };
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
    document.getElementById("signout").addEventListener("submit", () => { try { localStorage.removeItem(recentKey()); } catch (_) { /* storage off */ } });
  }
  route();
}
document.addEventListener("DOMContentLoaded", start);
