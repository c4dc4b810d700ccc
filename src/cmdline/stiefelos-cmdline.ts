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
