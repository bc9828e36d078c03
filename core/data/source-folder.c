/* source-folder.c: an ImageNet-style class folder as a labelled source.
 *
 * ROOT/<class>/<image>.{png,jpg,jpeg} (extensions compared without case,
 * so ImageNet's .JPEG counts), or ROOT/<split>/<class>/... when SPLIT is
 * given (fastai's GrandparentSplitter: MNIST_TINY's train/3, valid/7).
 * Classes are every non-hidden sub-folder, sorted by name in byte order
 * (torchvision's find_classes), so a class folder that holds no image
 * still keeps its label index; images are the non-hidden files directly
 * inside a class folder (not recursive), sorted by path.  Open only lists
 * the folders; get() reads and decodes one file, so it is safe from any
 * number of threads.  No image at all is a CT_ERROR_MISSING error. */
#include "config.h"

#include "data/source.h"

#include <string.h>
#include <sys/stat.h>

#include <glib/gstdio.h>

typedef struct {
  CtSource base;
  char *dir;
  GStringChunk *strings;
  char **paths; /* n, in GStringChunk */
  int *labels;  /* n */
  size_t n;
} FolderSource;

/* The reason in GLib's file errors ("Failed to open file “PATH”: REASON"),
 * so that ours name the path once. */
static const char *
file_error_reason(const GError *e)
{
  const char *r = e->domain == G_FILE_ERROR ? strrchr(e->message, ':') : NULL;
  return r && r[1] == ' ' && r[2] ? r + 2 : e->message;
}

static gboolean
is_image_name(const char *name)
{
  const char *dot = strrchr(name, '.');
  if (!dot || dot == name)
    return FALSE;
  return g_ascii_strcasecmp(dot, ".png") == 0 || g_ascii_strcasecmp(dot, ".jpg") == 0 ||
         g_ascii_strcasecmp(dot, ".jpeg") == 0;
}

static int
cmp_str(gconstpointer a, gconstpointer b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* FALSE, naming DIR, when DIR is there but is not a folder (a file, or a
 * FIFO): open would say "Not a directory" about a path below it. */
static gboolean
check_folder(const char *dir, GError **error)
{
  struct stat sb;
  if (stat(dir, &sb) == 0 && !S_ISDIR(sb.st_mode)) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: is %s, not a folder of images", dir,
                S_ISREG(sb.st_mode)    ? "a file"
                : S_ISFIFO(sb.st_mode) ? "a FIFO"
                                       : "a device or socket");
    return FALSE;
  }
  return TRUE;
}

/* Sorted names in DIR that pass WANT_DIR (folders) or image_name (files).
 * (transfer full) */
static GPtrArray *
list_dir(const char *dir, gboolean want_dirs, GError **error)
{
  if (!check_folder(dir, error))
    return NULL;
  GError *derr = NULL;
  GDir *d = g_dir_open(dir, 0, &derr);
  if (!d) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: %s", dir,
                file_error_reason(derr));
    g_error_free(derr);
    return NULL;
  }
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d))) {
    if (name[0] == '.')
      continue;
    char *full = g_build_filename(dir, name, NULL);
    gboolean is_dir = g_file_test(full, G_FILE_TEST_IS_DIR);
    if (want_dirs ? is_dir : (!is_dir && is_image_name(name)))
      g_ptr_array_add(names, g_strdup(name));
    g_free(full);
  }
  g_dir_close(d);
  g_ptr_array_sort(names, cmp_str);
  return names;
}

static size_t
folder_len(CtSource *src)
{
  return ((FolderSource *)src)->n;
}

static gboolean
folder_get(CtSource *src, size_t index, CtImage **image, char **caption, int *label,
           GError **error)
{
  FolderSource *s = (FolderSource *)src;
  if (!ct_source_check_index(s->dir, index, s->n, error))
    return FALSE;
  if (image && !(*image = ct_source_load_image(s->paths[index], error)))
    return FALSE;
  if (caption)
    *caption = NULL;
  if (label)
    *label = s->labels[index];
  return TRUE;
}

static void
folder_free(CtSource *src)
{
  FolderSource *s = (FolderSource *)src;
  g_strfreev(s->base.class_names);
  g_free(s->dir);
  g_string_chunk_free(s->strings);
  g_free(s->paths);
  g_free(s->labels);
  g_free(s);
}

static char *
folder_where(CtSource *src, size_t index)
{
  FolderSource *s = (FolderSource *)src;
  return index < s->n ? g_strdup(s->paths[index]) : NULL;
}

static const CtSourceVTable folder_vtable = { folder_len, folder_get, folder_free,
                                              folder_where };

CtSource *
ct_source_image_folder_new(const char *root, const char *split, GError **error)
{
  g_return_val_if_fail(root, NULL);
  if (!check_folder(root, error))
    return NULL;
  char *dir = split ? g_build_filename(root, split, NULL) : g_strdup(root);
  GPtrArray *classes = list_dir(dir, TRUE, error);
  if (!classes) {
    g_free(dir);
    return NULL;
  }

  GStringChunk *strings = g_string_chunk_new(4096);
  GPtrArray *paths = g_ptr_array_new();
  GArray *labels = g_array_new(FALSE, FALSE, sizeof(int));
  for (guint c = 0; c < classes->len; c++) {
    char *cdir = g_build_filename(dir, classes->pdata[c], NULL);
    GPtrArray *files = list_dir(cdir, FALSE, error);
    if (!files) {
      g_free(cdir);
      g_string_chunk_free(strings);
      g_ptr_array_free(paths, TRUE);
      g_array_free(labels, TRUE);
      g_ptr_array_free(classes, TRUE);
      g_free(dir);
      return NULL;
    }
    for (guint f = 0; f < files->len; f++) {
      char *p = g_build_filename(cdir, files->pdata[f], NULL);
      g_ptr_array_add(paths, g_string_chunk_insert(strings, p));
      g_free(p);
      int l = (int)c;
      g_array_append_val(labels, l);
    }
    g_ptr_array_free(files, TRUE);
    g_free(cdir);
  }

  if (paths->len == 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
                "%s%s: no images found (looked for ROOT/%s%s<class>/*.png|jpg|jpeg)", dir,
                g_str_has_suffix(dir, G_DIR_SEPARATOR_S) ? "" : G_DIR_SEPARATOR_S,
                split ? split : "", split ? "/" : "");
    g_string_chunk_free(strings);
    g_ptr_array_free(paths, TRUE);
    g_array_free(labels, TRUE);
    g_ptr_array_free(classes, TRUE);
    g_free(dir);
    return NULL;
  }

  FolderSource *s = g_new0(FolderSource, 1);
  s->base.vt = &folder_vtable;
  g_ptr_array_add(classes, NULL);
  s->base.class_names = (char **)g_ptr_array_free(classes, FALSE);
  s->strings = strings;
  s->n = paths->len;
  s->paths = (char **)g_ptr_array_free(paths, FALSE);
  s->labels = (int *)(void *)g_array_free(labels, FALSE);
  s->dir = dir;
  return &s->base;
}
