/* Text for the SL_E* codes, generated from the list in err.h. */
#include "sluice/err.h"

const char *sl_strerror(int err) {
    switch (err) {
    case SL_OK:
        return "success";
#define SL_ERR_CASE(name, text)                                                                    \
    case SL_E##name:                                                                               \
        return text;
        SL_ERR_LIST(SL_ERR_CASE)
#undef SL_ERR_CASE
    default:
        return "unknown error";
    }
}
