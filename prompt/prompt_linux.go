package prompt

// Linux has no Aqua session: GUI prompts need an X11 or Wayland display.
const platformHasAqua = false

// osascriptFor: osascript is macOS only.
func (s *selector) osascriptFor() Prompter { return nil }
