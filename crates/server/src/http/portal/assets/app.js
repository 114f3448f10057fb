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
  try {
    const p = location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    if (p[0] === "ui" && p[1] === "vaults" && p.length >= 5) {
      return await vaultPage(p[2], p[3], p[4], p[5] || "overview");
    }
    if (p[0] === "ui" && p[1] === "create-vault") return await createVault();
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
  show(el("h1", { text: "Key vaults" }),
    el("div", { class: "bar" }, filter, link("/ui/create-vault", "Create a vault", { class: "button-link", "data-test": "create-vault" })),
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
async function vaultPage(sub, rg, name, blade) {
  if (!/^[0-9a-fA-F-]{36}$/.test(sub)) throw new ApiError(404, "SubscriptionNotFound", "The subscription in this address is not valid.");
  const base = `/ui/vaults/${sub}/${encodeURIComponent(rg)}/${encodeURIComponent(name)}`;
  crumbs(link("/", "Home"), el("span", { text: rg }), el("span", { text: name }));
  const tabs = el("div", { class: "tabs" }, ["overview", "secrets", "keys", "certificates", "networking", "access"].map((b) =>
    link(`${base}/${b}`, b[0].toUpperCase() + b.slice(1), { class: b === blade ? "on" : "", "data-test": "tab-" + b })));
  const content = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  show(el("h1", { text: name }), tabs, content);
  try {
    if (blade === "secrets") await secretsBlade(content, name);
    else if (blade === "keys") await keysBlade(content, name);
    else if (blade === "certificates") await certificatesBlade(content, name);
    else if (blade === "networking") await networkingBlade(content, sub, rg, name);
    else if (blade === "access") await accessBlade(content, sub, rg, name);
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
    el("div", { class: "bar" }, el("button", { type: "button", class: "plain", text: "Show deleted secrets", "data-test": "show-deleted-secrets",
      on: { click: () => deletedSecrets(deletedBox, vault, reloadList).catch((e) => deletedBox.replaceChildren(errorBox(e))) } })),
    deletedBox);
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

async function secretDetail(detail, vault, name, changed) {
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
    const status = el("div");
    const act = (label, test, f) => el("button", { type: "button", class: "plain", text: label, "data-test": test, on: { click: async () => {
      status.replaceChildren();
      try { await f(); } catch (e) { status.replaceChildren(errorBox(e)); }
    } } });
    const toggle = (v) => {
      const enabled = v.attributes.enabled !== false;
      const version = v.id.split("/").pop();
      return act(enabled ? "Disable" : "Enable", enabled ? "disable-version" : "enable-version", async () => {
        await api("PATCH", `${path}/${encodeURIComponent(version)}?${KV_API}`, { attributes: { enabled: !enabled } });
        await secretDetail(detail, vault, name, changed);
        if (changed) await changed();
      });
    };
    const del = act("Delete secret", "delete-secret", async () => {
      if (!window.confirm(`Delete ${name}? It can be recovered until it is purged.`)) return;
      await api("DELETE", `${path}?${KV_API}`);
      detail.replaceChildren(el("p", { class: "ok", text: `${name} was deleted.`, "data-test": "secret-deleted" }));
      if (changed) await changed();
    });
    detail.replaceChildren(el("div", { class: "panel", "data-test": "secret-detail" },
      el("h2", { text: name }),
      el("div", { class: "bar" }, showBtn, valueSlot),
      status,
      el("table", {}, el("thead", {}, el("tr", {}, ["Version", "Status", "Created", "Expires", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, versions.map((v) => el("tr", { "data-test": "version-row" },
          el("td", { text: v.id.split("/").pop() }),
          el("td", { text: v.attributes.enabled === false ? "Disabled" : "Enabled" }),
          el("td", { text: isoTime(v.attributes.created) }),
          el("td", { text: isoTime(v.attributes.exp) }),
          el("td", {}, toggle(v)))))),
      el("div", { class: "bar" }, del)));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
}

// Soft-deleted secrets of the vault: recover or purge.
async function deletedSecrets(box, vault, changed) {
  const base = `/api/vault/${encodeURIComponent(vault)}`;
  const status = el("div");
  const page = await api("GET", `${base}/deletedsecrets?${KV_API}&maxresults=25`);
  const rows = (page.value || []).map((d) => {
    const n = d.recoveryId ? d.recoveryId.split("/deletedsecrets/")[1] : d.id.split("/secrets/")[1].split("/")[0];
    const act = (label, test, f) => el("button", { type: "button", class: "plain", text: label, "data-test": test, on: { click: async () => {
      status.replaceChildren();
      try { await f(); await deletedSecrets(box, vault, changed); if (changed) await changed(); } catch (e) { status.replaceChildren(errorBox(e)); }
    } } });
    return el("tr", { "data-test": "deleted-secret-row" }, el("td", { text: n }), el("td", { text: isoTime(d.deletedDate) }),
      el("td", { text: isoTime(d.scheduledPurgeDate) }),
      el("td", {}, act("Recover", "recover-secret", () => api("POST", `${base}/deletedsecrets/${encodeURIComponent(n)}/recover?${KV_API}`)), " ",
        act("Purge", "purge-secret", async () => {
          if (window.confirm(`Purge ${n}? It is destroyed for good.`)) await api("DELETE", `${base}/deletedsecrets/${encodeURIComponent(n)}?${KV_API}`);
        })));
  });
  box.replaceChildren(el("h2", { text: "Deleted secrets" }), status,
    rows.length ? el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Deleted", "Purge scheduled", ""].map((h) => el("th", { text: h })))), el("tbody", {}, rows))
      : el("p", { class: "muted", text: "No deleted secrets." }));
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
  const who = el("input", { placeholder: "Search users, groups, applications, managed identities", "data-test": "principal-search" });
  const picks = el("select", { "data-test": "principal-select", size: 5 });
  // The directory is read once per visit (one request per object kind).
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
    status);
  await draw();
  await search();
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
  const bypass = el("input", { type: "checkbox", checked: acls.bypass !== "None", "data-test": "bypass" });
  const save = el("button", { type: "button", text: "Save", "data-test": "network-save" });
  save.addEventListener("click", async () => {
    status.replaceChildren();
    const chosen = content.querySelector("input[name=access]:checked").value;
    const body = { properties: {
      publicNetworkAccess: chosen === "disabled" ? "Disabled" : "Enabled",
      networkAcls: { defaultAction: chosen === "disabled" ? (acls.defaultAction || "Allow") : chosen === "all" ? "Allow" : "Deny", bypass: bypass.checked ? "AzureServices" : "None",
        ipRules: ips.map((value) => ({ value })), virtualNetworkRules: acls.virtualNetworkRules || [] } } };
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
    el("h2", { text: "Virtual networks" }),
    el("ul", {}, (acls.virtualNetworkRules || []).map((r) => el("li", { text: r.id }))),
    (acls.virtualNetworkRules || []).length ? null : el("p", { class: "muted", text: "No virtual-network rules." }),
    el("div", { class: "bar" }, el("label", {}, bypass, " Allow trusted Microsoft services to bypass this firewall")),
    el("div", { class: "bar" }, save), status);
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
    (name) => keyDetail(detail, vault, name));
  const status = el("div");
  const name = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "new-key-name" });
  const kty = el("select", { "data-test": "new-key-type" }, ["RSA 2048", "RSA 3072", "RSA 4096", "EC P-256", "EC P-384", "EC P-521"].map((o) => el("option", { text: o })));
  const form = el("form", { class: "form", "data-test": "new-key" },
    el("label", { text: "Name" }), name, el("label", { text: "Type" }), kty,
    el("span"), el("button", { type: "submit", text: "Create", "data-test": "new-key-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const [t, size] = kty.value.split(" ");
    const body = t === "RSA" ? { kty: "RSA", key_size: Number(size) } : { kty: "EC", crv: size };
    try {
      const n = name.value;
      await api("POST", `/api/vault/${encodeURIComponent(vault)}/keys/${encodeURIComponent(n)}/create?${KV_API}`, body);
      form.reset();
      await list.reload();
      await keyDetail(detail, vault, n);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  content.replaceChildren(list.node, detail, el("h2", { text: "Create a key" }), status, form);
  await list.reload();
}

async function keyDetail(detail, vault, name) {
  const path = `/api/vault/${encodeURIComponent(vault)}/keys/${encodeURIComponent(name)}`;
  detail.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const k = await api("GET", `${path}?${KV_API}`);
    const j = k.key || {};
    const size = j.n ? String(b64urlToBytes(j.n).length * 8) + " bits" : (j.crv || "");
    const jwk = btoa(JSON.stringify(Object.fromEntries(Object.entries(j).filter(([x]) => ["kid", "kty", "n", "e", "crv", "x", "y", "key_ops"].includes(x))), null, 2));
    detail.replaceChildren(el("div", { class: "panel", "data-test": "key-detail" },
      el("h2", { text: name }),
      el("dl", { class: "props" }, [
        ["Key type", j.kty], ["Size / curve", size], ["Operations", (j.key_ops || []).join(", ")],
        ["Enabled", k.attributes.enabled === false ? "No" : "Yes"], ["Created", isoTime(k.attributes.created)],
        ["Expires", isoTime(k.attributes.exp) || "Never"], ["Key identifier", j.kid],
      ].flatMap(([a, b]) => [el("dt", { text: a }), el("dd", { text: b || "", "data-test": "key-" + a.toLowerCase().replace(/[^a-z]+/g, "-") })])),
      el("div", { class: "bar" }, download(`${name}.jwk.json`, "application/json", jwk))));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
}

// ---- certificates ------------------------------------------------------------
async function certificatesBlade(content, vault) {
  const detail = el("div");
  const list = pagedList(vault, "certificates", ["Name", "Thumbprint", "Status", "Expires"],
    (c) => [c.x5t ? hex(b64urlToBytes(c.x5t)) : "", c.attributes && c.attributes.enabled === false ? "Disabled" : "Enabled", isoTime(c.attributes && c.attributes.exp)],
    (name) => certificateDetail(detail, vault, name));
  const status = el("div");
  const name = el("input", { required: true, pattern: "[0-9a-zA-Z-]{1,127}", "data-test": "new-cert-name" });
  const subject = el("input", { required: true, value: "CN=example.test", "data-test": "new-cert-subject" });
  const dns = el("input", { placeholder: "a.example.test, b.example.test", "data-test": "new-cert-dns" });
  const form = el("form", { class: "form", "data-test": "new-cert" },
    el("label", { text: "Name" }), name, el("label", { text: "Subject" }), subject,
    el("label", { text: "DNS names" }), dns,
    el("span"), el("button", { type: "submit", text: "Create self-signed", "data-test": "new-cert-submit" }));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    status.replaceChildren();
    const names = dns.value.split(",").map((x) => x.trim()).filter(Boolean);
    const policy = { issuer: { name: "Self" }, x509_props: { subject: subject.value, validity_months: 12 },
      key_props: { kty: "RSA", key_size: 2048, exportable: true, reuse_key: false }, secret_props: { contentType: "application/x-pkcs12" } };
    if (names.length) policy.x509_props.sans = { dns_names: names };
    try {
      const n = name.value;
      await api("POST", `/api/vault/${encodeURIComponent(vault)}/certificates/${encodeURIComponent(n)}/create?${KV_API}`, { policy });
      form.reset();
      await list.reload();
      await certificateDetail(detail, vault, n);
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  content.replaceChildren(list.node, detail, el("h2", { text: "Create a certificate" }), status, form);
  await list.reload();
}

async function certificateDetail(detail, vault, name) {
  const path = `/api/vault/${encodeURIComponent(vault)}/certificates/${encodeURIComponent(name)}`;
  detail.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  try {
    const c = await api("GET", `${path}?${KV_API}`);
    const der = Uint8Array.from(atob(c.cer), (x) => x.charCodeAt(0));
    const x = parseCertificate(der);
    const sha256 = hex(new Uint8Array(await crypto.subtle.digest("SHA-256", der)));
    const sha1 = c.x5t ? hex(b64urlToBytes(c.x5t)) : "";
    const pem = btoa("-----BEGIN CERTIFICATE-----\n" + c.cer.match(/.{1,64}/g).join("\n") + "\n-----END CERTIFICATE-----\n");
    const rows = [
      ["Subject", x.subject], ["Issuer", x.issuer], ["Serial number", x.serial],
      ["Subject alternative names", x.sans.join(", ")], ["Not before", x.notBefore], ["Not after", x.notAfter],
      ["Key", x.key], ["SHA-1 thumbprint", sha1], ["SHA-256 thumbprint", sha256],
      ["Content type", (c.policy && c.policy.secret_props && c.policy.secret_props.contentType) || ""],
      ["Issuer (policy)", (c.policy && c.policy.issuer && c.policy.issuer.name) || ""],
      ["Certificate identifier", c.id],
    ];
    detail.replaceChildren(el("div", { class: "panel", "data-test": "cert-detail" },
      el("h2", { text: name }),
      el("dl", { class: "props" }, rows.flatMap(([a, b]) => [el("dt", { text: a }), el("dd", { text: b, "data-test": "cert-" + a.toLowerCase().replace(/[^a-z0-9]+/g, "-") })])),
      el("div", { class: "bar" }, download(`${name}.cer`, "application/pkix-cert", c.cer), download(`${name}.pem`, "application/x-pem-file", pem))));
  } catch (e) { detail.replaceChildren(errorBox(e)); }
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
  }
  route();
}
document.addEventListener("DOMContentLoaded", start);
