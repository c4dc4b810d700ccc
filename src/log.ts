// Loggers are passed in; library code never prints. Silent by default.
// Debug output is enabled per subsystem namespace, e.g.
// STIEFEL_DEBUG=nbd,discovery (or `*`), which only the CLI reads.

export interface Logger {
  /** Progress and results a person running the command wants to see. */
  info(message: string): void;
  /** Something went wrong but the work goes on. */
  warn(message: string): void;
  /** Developer detail, shown only when this logger's namespace is enabled. */
  debug(message: string): void;
  /** Whether debug lines are shown: a logger that relays lines elsewhere sends none that nobody shows. */
  readonly debugging: boolean;
  /** A logger for a subsystem; its debug output is enabled by that name. */
  child(namespace: string): Logger;
}

export const silentLogger: Logger = {
  info() {},
  warn() {},
  debug() {},
  debugging: false,
  child() {
    return silentLogger;
  },
};

export interface StreamLoggerOptions {
  /** Where lines go; usually process.stderr. */
  write: (line: string) => void;
  /** Namespaces whose debug lines are shown; `*` shows all. */
  debugNamespaces?: ReadonlySet<string>;
  /** Show info lines (false for --quiet). */
  info?: boolean;
}

export function createStreamLogger(options: StreamLoggerOptions, namespace = ''): Logger {
  const debugOn = (ns: string): boolean => {
    const set = options.debugNamespaces;
    if (!set || set.size === 0) return false;
    if (set.has('*')) return true;
    // `nbd` enables `nbd` and `nbd:conn`.
    for (const n of set) if (ns === n || ns.startsWith(`${n}:`)) return true;
    return false;
  };
  const showInfo = options.info ?? true;
  const enabled = debugOn(namespace);
  return {
    info(message) {
      if (showInfo) options.write(`${message}\n`);
    },
    warn(message) {
      options.write(`warning: ${message}\n`);
    },
    debug(message) {
      if (enabled) options.write(`[${namespace}] ${message}\n`);
    },
    debugging: enabled,
    child(ns) {
      return createStreamLogger(options, namespace ? `${namespace}:${ns}` : ns);
    },
  };
}

export function parseDebugNamespaces(value: string | undefined): Set<string> {
  return new Set(
    (value ?? '')
      .split(/[,\s]+/)
      .map((s) => s.trim())
      .filter(Boolean),
  );
}
