// The per-boot settings of the WireGuard disk link, as the laptop hands them
// to the desktop (inside the signed, encrypted manifest) and the desktop to
// the laptop OS's initramfs (inside the secrets cpio appended to its initrd).
/**
 * Per-boot WireGuard settings for the disk link. Handed to the
 * desktop only inside this authenticated, encrypted channel, and to the laptop
 * OS's initramfs only inside the secrets cpio appended to its initrd.
 */
export interface WireGuardLink {
  /** The desktop's private key for this boot, base64 (32 bytes). */
  clientPrivateKey: string;
  /** The desktop's tunnel address with prefix, e.g. 10.83.70.2/30. */
  clientAddress: string;
  /** The laptop's public key, base64. */
  serverPublicKey: string;
  /** The laptop's tunnel address (where NBD listens), e.g. 10.83.70.1. */
  serverAddress: string;
  /** UDP port of the laptop's WireGuard on the link. */
  serverPort: number;
}
