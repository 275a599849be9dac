() => {
  // Diagnose's probability bars (gradio's Label) round to whole percent, so the demo model's 0.99994 for its
  // own mass scan reads "100%" and a class at 0.00004 "0%": certainty no model has. Each bar's meter holds
  // the exact probability; a bar short of 1 that rounds to 100 reads ">99%", one above 0 that rounds to 0
  // "<1%", as the table and captions do (ui/diagnose.py, percent).
  // The text node is the Label's own, changed in place: gradio keeps writing to it.
  const text = (p) => {
    const whole = Math.round(p * 100);
    if (p < 1 && whole === 100) return ">99%";
    if (p > 0 && whole === 0) return "<1%";
    return `${whole}%`;
  };
  const mend = () => {
    for (const bar of document.querySelectorAll("#diagnose-probs .confidence-set")) {
      const meter = bar.querySelector("meter");
      const shown = bar.querySelector("dd.confidence")?.firstChild;
      if (!meter || !shown || shown.nodeType !== Node.TEXT_NODE) continue;
      const wanted = text(Number(meter.value));
      if (shown.nodeValue !== wanted) shown.nodeValue = wanted;
    }
  };
  const watched = { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ["value"] };
  new MutationObserver(mend).observe(document.body, watched);
  mend();
}
