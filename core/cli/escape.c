/* escape.c: text read from files (plugin names and docs, image paths,
 * labels), made safe to print on a terminal. */
#include "config.h"

#include "cli/cli.h"

#include <string.h>

char *
ct_cli_escape(const char *s)
{
  if (!s)
    return g_strdup("");
  GString *g = g_string_sized_new(strlen(s));
  const char *p = s, *end = s + strlen(s);
  while (p < end) {
    gunichar c = g_utf8_get_char_validated(p, end - p);
    if (c == (gunichar) -1 || c == (gunichar) -2) { /* a byte that is no UTF-8 */
      g_string_append_printf(g, "\\x%02x", (unsigned char) *p);
      p++;
      continue;
    }
    const char *next = g_utf8_next_char(p);
    if (c < 0x20 || c == 0x7f)
      g_string_append_printf(g, "\\x%02x", (unsigned) c);
    else if (c >= 0x80 && c < 0xa0) /* C1 controls: CSI (U+009B) starts a sequence too */
      g_string_append_printf(g, "\\u%04x", (unsigned) c);
    else
      g_string_append_len(g, p, next - p);
    p = next;
  }
  return g_string_free(g, FALSE);
}
