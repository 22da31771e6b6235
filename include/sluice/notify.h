/* The systemd notification protocol (sd_notify(3)), written by hand: one
 * datagram to the socket named by $NOTIFY_SOCKET, so that a Type=notify
 * unit knows when sluice listens (READY=1), reloads (RELOADING=1, then
 * READY=1) and stops (STOPPING=1). Without $NOTIFY_SOCKET it does nothing.
 * Pure: no libuv; a datagram to a local socket never blocks for long. */
#ifndef SLUICE_NOTIFY_H
#define SLUICE_NOTIFY_H

/* Sends state ("READY=1", "STATUS=...", several lines allowed) to the
 * service manager. Returns 1 if sent, 0 with no $NOTIFY_SOCKET, -1 (errno
 * set) if it could not be sent. */
int sl_notify(const char *state);
/* The same with "RELOADING=1" and the MONOTONIC_USEC= line systemd 253+
 * asks for with it. */
int sl_notify_reloading(void);

#endif
