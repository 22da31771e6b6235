/* auth_hba_file: the lines of pg_hba.conf that apply to a proxy (local,
 * host, hostssl, hostnossl; database and user lists or all; addresses as
 * CIDR or address + mask, IPv4 and IPv6; trust, reject, md5,
 * scram-sha-256, cert, password). First match wins; no match rejects.
 * Pure: parsing and matching only. */
#ifndef SLUICE_HBA_H
#define SLUICE_HBA_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "sluice/err.h"

enum sl_hba_method { SL_HBA_REJECT, SL_HBA_TRUST, SL_HBA_MD5, SL_HBA_SCRAM, SL_HBA_CERT,
                     SL_HBA_PASSWORD };
extern const char *const sl_hba_method_names[];

typedef struct sl_hba sl_hba_t;

/* Parses text (name for messages); NULL with "name:line: why" in err. */
sl_hba_t *sl_hba_parse(const char *name, const char *text, char *err, size_t errlen);
sl_hba_t *sl_hba_load(const char *path, char *err, size_t errlen);
void sl_hba_free(sl_hba_t *h);

/* The method for a connection: addr NULL for a Unix socket. *line gets the
 * matching line (0: none matched, which rejects). */
enum sl_hba_method sl_hba_match(const sl_hba_t *h, const struct sockaddr *addr, bool tls,
                                const char *db, const char *user, int *line);

#endif
