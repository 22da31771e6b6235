/* Intrusive doubly linked lists: a connection sits on exactly one list of its
 * owner (idle servers, waiting clients...), so moving it is O(1) and a SHOW is
 * a list walk. */
#ifndef SLUICE_LIST_H
#define SLUICE_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct sl_list {
    struct sl_list *prev, *next;
} sl_list_t;

#define sl_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static inline void sl_list_init(sl_list_t *l) { l->prev = l->next = l; }
static inline bool sl_list_empty(const sl_list_t *l) { return l->next == l; }
static inline void sl_list_unlink(sl_list_t *n) {
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
static inline void sl_list_push_back(sl_list_t *l, sl_list_t *n) {
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}
static inline void sl_list_push_front(sl_list_t *l, sl_list_t *n) {
    n->next = l->next;
    n->prev = l;
    l->next->prev = n;
    l->next = n;
}
static inline sl_list_t *sl_list_first(const sl_list_t *l) { return l->next == l ? NULL : l->next; }

#define sl_list_each(it, tmp, head) for (it = (head)->next, tmp = it->next; it != (head); it = tmp, tmp = it->next)

#endif
