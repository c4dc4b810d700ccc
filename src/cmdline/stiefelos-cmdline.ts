// stiefelOS's own kernel command line, for the server role started on the
// laptop (by autokexec, or from its boot menu). Pure.

/**
 * stiefelOS's command line for the server role: the role, the running
 * kernel's console= settings (so stiefelOS shows where this OS did), and the
 * config's additions.
 */
export function serverCmdline(runningCmdline: string, append: string): string {
  const consoles = runningCmdline.split(/\s+/).filter((w) => /^console=/.test(w));
  return ['stiefel.role=server', ...consoles, ...(append ? [append] : [])].join(' ');
}

/**
 * The desktop's consoles, for its stiefelOS from the stick or by PXE: the
 * kernel prints to every console= given, and the last one is /dev/console,
 * where /init reads input; the screen comes last so a person at the desktop
 * types there (the serial port gets a copy of the output).
 */
export const DESKTOP_CONSOLES = 'console=ttyS0,115200 console=tty0';
