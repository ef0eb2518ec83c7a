// Small progressive enhancements; every page works without JavaScript.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copyTarget);
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent).then(() => {
    const label = button.textContent;
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = label; }, 1500);
  });
});

// Pages that show background work (preflight, restore, re-encryption) reload a fragment.
document.querySelectorAll("[data-poll-url]").forEach((region) => {
  const interval = Number(region.dataset.pollInterval || 2000);
  const tick = () => {
    fetch(region.dataset.pollUrl, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => {
        region.innerHTML = html;
        if (!region.querySelector("[data-poll-done]")) setTimeout(tick, interval);
      })
      .catch(() => setTimeout(tick, interval * 2));
  };
  if (!region.querySelector("[data-poll-done]")) setTimeout(tick, interval);
});
