/* A TCP relay on loopback that holds every chunk for a settable delay in
 * each direction: a slow network in front of one backend, without any hook
 * inside sluice. */
#ifndef SLUICE_IT_DELAY_H
#define SLUICE_IT_DELAY_H

typedef struct it_delay it_delay_t;

/* Starts relaying a free local port to 127.0.0.1:target. */
it_delay_t *it_delay_start(int target);
int it_delay_port(const it_delay_t *d);
/* Milliseconds added to each chunk, each way (0: none). */
void it_delay_set(it_delay_t *d, int ms);
/* The next n connections are cut (both sides closed) when the client sends
 * its second chunk: for a TLS client, its ClientHello after the SSLRequest
 * was answered, so the handshake meets an unexpected EOF. */
void it_delay_cut(it_delay_t *d, int n);

#endif
