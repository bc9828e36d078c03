/* text.c: small text helpers shared by the data, the metrics and the
 * commands: a caption template filled with a label, a duration as a
 * clock reads. */
#include "config.h"

#include <cliptrain/ct-common.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

char *
ct_template_fill(const char *tmpl, const char *label)
{
  const char *at = strstr(tmpl, "{label}");
  if (!at)
    return g_strdup(tmpl);
  return g_strdup_printf("%.*s%s%s", (int) (at - tmpl), tmpl, label, at + 7);
}

const char *
ct_format_duration(char *buf, size_t size, double seconds)
{
  long t = isfinite(seconds) && seconds > 0 ? (long) (seconds + 0.5) : 0;
  if (t >= 3600)
    snprintf(buf, size, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
  else
    snprintf(buf, size, "%02ld:%02ld", t / 60, t % 60);
  return buf;
}
