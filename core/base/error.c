/* error.c: the CT_ERROR domain and the version string. */
#include "config.h"

#include <cliptrain/ct-common.h>

G_DEFINE_QUARK(ct-error-quark, ct_error)

const char *
ct_version(void)
{
  return PACKAGE_VERSION;
}
