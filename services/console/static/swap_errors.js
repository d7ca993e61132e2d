// htmx swaps only 2xx answers by default, so an error fragment (a refused filter, a missing
// collection) never showed. A target marked data-swap-errors shows the page's error fragment;
// the polled regions keep their last good content instead.
document.addEventListener("htmx:beforeSwap", (event) => {
  const { target, xhr } = event.detail;
  if (xhr.status >= 400 && target.hasAttribute("data-swap-errors")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
