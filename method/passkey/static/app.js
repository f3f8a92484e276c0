// The agent's one-time passkey page: runs the WebAuthn ceremony with the
// options the agent embedded and posts the result back to the same URL.
"use strict";
(function () {
  const app = document.getElementById("app");
  const status = document.getElementById("status");
  const retry = document.getElementById("retry");
  const mode = app.dataset.mode;
  const options = JSON.parse(app.dataset.options);

  function b64u(s) {
    s = s.replace(/-/g, "+").replace(/_/g, "/");
    while (s.length % 4) s += "=";
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out.buffer;
  }
  function u64(buf) {
    if (!buf) return undefined;
    const b = new Uint8Array(buf);
    let s = "";
    for (let i = 0; i < b.length; i++) s += String.fromCharCode(b[i]);
    return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function parse(o) {
    const PKC = window.PublicKeyCredential;
    if (mode === "create" && PKC.parseCreationOptionsFromJSON) return PKC.parseCreationOptionsFromJSON(o);
    if (mode === "get" && PKC.parseRequestOptionsFromJSON) return PKC.parseRequestOptionsFromJSON(o);
    // Browsers without the JSON helpers.
    const p = Object.assign({}, o, { challenge: b64u(o.challenge) });
    if (o.user) p.user = Object.assign({}, o.user, { id: b64u(o.user.id) });
    const descs = (l) => (l || []).map((d) => Object.assign({}, d, { id: b64u(d.id) }));
    if (o.excludeCredentials) p.excludeCredentials = descs(o.excludeCredentials);
    if (o.allowCredentials) p.allowCredentials = descs(o.allowCredentials);
    return p;
  }
  function toJSON(c) {
    if (typeof c.toJSON === "function") return c.toJSON();
    const r = c.response;
    const out = {
      id: c.id, rawId: u64(c.rawId), type: c.type,
      authenticatorAttachment: c.authenticatorAttachment || undefined,
      clientExtensionResults: c.getClientExtensionResults(),
      response: { clientDataJSON: u64(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = u64(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = u64(r.authenticatorData);
      out.response.signature = u64(r.signature);
      out.response.userHandle = u64(r.userHandle);
    }
    return out;
  }
  function show(text, cls) {
    status.textContent = text;
    status.className = cls || "";
  }

  let busy = false;
  async function run() {
    if (busy) return;
    busy = true;
    retry.hidden = true;
    show("Waiting for your passkey\u2026");
    let cred;
    try {
      const publicKey = parse(options);
      cred = mode === "create"
        ? await navigator.credentials.create({ publicKey })
        : await navigator.credentials.get({ publicKey });
    } catch (e) {
      busy = false;
      show("The passkey dialog was closed or failed (" + (e && e.name ? e.name : "error") + ").", "err");
      retry.hidden = false;
      return;
    }
    show("Checking\u2026");
    try {
      const r = await fetch(location.pathname, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(toJSON(cred)),
        credentials: "same-origin",
        cache: "no-store",
      });
      const res = await r.json();
      show(res.message || (res.ok ? "Done." : "Not accepted."), res.ok ? "ok" : "err");
      document.body.dataset.result = res.ok ? (res.pending ? "pending" : "ok") : "refused";
    } catch (e) {
      show("Could not reach stepup-agent: " + (e && e.message ? e.message : e), "err");
      document.body.dataset.result = "error";
    }
  }
  retry.addEventListener("click", run);
  run();
})();
