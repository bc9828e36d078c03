/* embed.c: `cliptrain embed`, L2-normalised features of images or texts to
 * a safetensors or .npy file; and the model, tokenizer and encoding helpers
 * that zeroshot and retrieve share. */
#include "config.h"

#include "base/file.h"
#include "cli/cli.h"

#include <cliptrain/cliptrain.h>

#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

CtTokenizer *
ct_cli_tokenizer(const char *model_path, const char *vocab, const CtModel *m, GError **error)
{
  CtTokenizer *tok = NULL;
  if (vocab) {
    tok = ct_tokenizer_new_from_file(vocab, error);
    if (!tok && !strstr((*error)->message, vocab))
      g_prefix_error(error, "%s: ", vocab);
  } else {
    CtSafetensors *st = ct_safetensors_open(model_path, error);
    if (!st)
      return NULL;
    const char *text = ct_safetensors_metadata(st, "vocab");
    const char *file = ct_safetensors_metadata(st, "vocab_file");
    if (text) {
      /* OpenAI's format: a header line, then one merge a line */
      char **lines = g_strsplit(text, "\n", -1);
      size_t n = g_strv_length(lines);
      while (n > 1 && !*lines[n - 1])
        n--;
      tok = ct_tokenizer_new_from_merges((const char *const *) lines + (n > 0),
                                         n > 0 ? n - 1 : 0, error);
      g_strfreev(lines);
      if (!tok)
        g_prefix_error(error, "%s: metadata 'vocab': ", model_path);
    } else
      g_set_error(error, CT_ERROR, CT_ERROR_MISSING,
                  "%s: the checkpoint holds no learned vocabulary%s%s%s: pass --vocab FILE",
                  model_path, file ? " (it was trained with '" : "", file ? file : "",
                  file ? "')" : "");
    ct_safetensors_free(st);
  }
  if (tok && ct_tokenizer_vocab_size(tok) > ct_model_config(m)->vocab_size) {
    g_set_error(error, CT_ERROR, CT_ERROR_CONFIG,
                "%s: the vocabulary has %d ids but the model's vocab_size is %d",
                vocab ? vocab : model_path, ct_tokenizer_vocab_size(tok),
                ct_model_config(m)->vocab_size);
    g_clear_pointer(&tok, ct_tokenizer_free);
  }
  return tok;
}

static gboolean
is_image_name(const char *name)
{
  const char *dot = strrchr(name, '.');
  return dot && (g_ascii_strcasecmp(dot, ".png") == 0 || g_ascii_strcasecmp(dot, ".jpg") == 0 ||
                 g_ascii_strcasecmp(dot, ".jpeg") == 0);
}

static gboolean
walk(const char *dir, GPtrArray *out, int depth, GError **error)
{
  GDir *d = g_dir_open(dir, 0, error);
  if (!d)
    return FALSE;
  GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
  const char *name;
  while ((name = g_dir_read_name(d)))
    g_ptr_array_add(names, g_build_filename(dir, name, NULL));
  g_dir_close(d);
  g_ptr_array_sort(names, (GCompareFunc) ct_cli_strcmp_p);
  gboolean ok = TRUE;
  for (guint i = 0; ok && i < names->len; i++) {
    const char *p = names->pdata[i];
    if (g_file_test(p, G_FILE_TEST_IS_DIR)) {
      if (depth < 64)
        ok = walk(p, out, depth + 1, error);
    } else if (is_image_name(p))
      g_ptr_array_add(out, g_strdup(p));
  }
  g_ptr_array_unref(names);
  return ok;
}

int
ct_cli_strcmp_p(const void *a, const void *b)
{
  return strcmp(*(char *const *) a, *(char *const *) b);
}

GPtrArray *
ct_cli_image_paths(char **args, GError **error)
{
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  for (; args && *args; args++) {
    if (!g_file_test(*args, G_FILE_TEST_IS_DIR)) {
      g_ptr_array_add(out, g_strdup(*args));
      continue;
    }
    guint before = out->len;
    if (!walk(*args, out, 0, error)) {
      g_ptr_array_unref(out);
      return NULL;
    }
    if (out->len == before) {
      g_set_error(error, CT_ERROR, CT_ERROR_MISSING, "%s: no .png, .jpg or .jpeg images in it",
                  *args);
      g_ptr_array_unref(out);
      return NULL;
    }
  }
  return out;
}

float *
ct_cli_encode_images(CtModel *m, const char *const *paths, size_t n, GError **error)
{
  const CtConfig *c = ct_model_config(m);
  size_t R = (size_t) c->image_resolution, E = (size_t) c->embed_dim;
  size_t B = (size_t) ct_model_max_batch(m);
  static const float mean[3] = CT_CLIP_MEAN, std[3] = CT_CLIP_STD;
  float *feats = g_new(float, n * E), *px = g_new(float, B * 3 * R * R);
  for (size_t i = 0; i < n; i += B) {
    size_t b = MIN(B, n - i);
    for (size_t k = 0; k < b; k++) {
      CtImage *img = ct_image_load(paths[i + k], error);
      if (!img)
        goto fail;
      ct_image_resize_center_crop(img, (int) R, mean, std, px + k * 3 * R * R);
      ct_image_free(img);
    }
    if (!ct_model_encode_image(m, px, (int) b, error))
      goto fail;
    memcpy(feats + i * E, ct_model_image_features(m), b * E * sizeof(float));
  }
  g_free(px);
  return feats;
fail:
  g_free(px);
  g_free(feats);
  return NULL;
}

float *
ct_cli_encode_texts(CtModel *m, const CtTokenizer *tok, const char *const *texts, size_t n,
                    int context_length, gboolean truncate, const char *where, GError **error)
{
  const CtConfig *c = ct_model_config(m);
  size_t T = (size_t) c->context_length, E = (size_t) c->embed_dim;
  size_t B = (size_t) ct_model_max_batch(m);
  float *feats = g_new(float, n * E);
  int32_t *ids = g_new0(int32_t, B * T);
  for (size_t i = 0; i < n; i += B) {
    size_t b = MIN(B, n - i);
    memset(ids, 0, B * T * sizeof(int32_t));
    for (size_t k = 0; k < b; k++)
      if (!ct_tokenizer_tokenize(tok, texts[i + k], context_length, truncate, ids + k * T,
                                 error)) {
        if (where)
          g_prefix_error(error, "%s:%zu: ", where, i + k + 1);
        goto fail;
      }
    if (!ct_model_encode_text(m, ids, (int) b, error))
      goto fail;
    memcpy(feats + i * E, ct_model_text_features(m), b * E * sizeof(float));
  }
  g_free(ids);
  return feats;
fail:
  g_free(ids);
  g_free(feats);
  return NULL;
}

/* ------------------------------------------------------------ writing */

/* PATH holds the N parts (data, len) once this returns TRUE: written to a
 * temporary file in the same folder, fsynced, renamed over PATH. */
static gboolean
write_atomic(const char *path, const void *const *data, const size_t *len, int n,
             GError **error)
{
  g_autofree char *tmp = g_strdup_printf("%s.tmp.XXXXXX", path);
  int fd = g_mkstemp(tmp);
  if (fd < 0) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: cannot create a temporary file: %s", path,
                g_strerror(errno));
    return FALSE;
  }
  mode_t mask = umask(0);
  umask(mask);
  gboolean ok = fchmod(fd, 0666 & ~mask) == 0;
  for (int i = 0; ok && i < n; i++) {
    const char *p = data[i];
    for (size_t left = len[i]; ok && left > 0;) {
      ssize_t w = write(fd, p, left);
      if (w < 0 && errno == EINTR)
        continue;
      ok = w > 0;
      p += ok ? w : 0;
      left -= ok ? (size_t) w : 0;
    }
  }
  ok = ok && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  ok = ok && rename(tmp, path) == 0;
  if (!ok) {
    g_set_error(error, CT_ERROR, CT_ERROR_IO, "%s: write failed: %s", path, g_strerror(errno));
    unlink(tmp);
    return FALSE;
  }
  g_autofree char *dir = g_path_get_dirname(path);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return TRUE;
}

/* NumPy's format 1.0: magic, version, header length (u16 LE), a dict
 * padded with spaces and ended by '\n' so the data starts at a multiple of
 * 64 bytes, then the float32 data. */
static gboolean
write_npy(const char *path, const float *x, size_t n, size_t e, GPtrArray *ids, GError **error)
{
  GString *h = g_string_new("\x93NUMPY\x01");
  g_string_append_c(h, '\0');
  g_string_append(h, "HL");
  g_string_append_printf(h, "{'descr': '%cf4', 'fortran_order': False, 'shape': (%zu, %zu), }",
                         G_BYTE_ORDER == G_LITTLE_ENDIAN ? '<' : '>', n, e);
  while ((h->len + 1) % 64)
    g_string_append_c(h, ' ');
  g_string_append_c(h, '\n');
  size_t hl = h->len - 10;
  h->str[8] = (char) (hl & 0xff);
  h->str[9] = (char) (hl >> 8);
  GString *lines = g_string_new(NULL);
  for (guint i = 0; i < ids->len; i++)
    g_string_append_printf(lines, "%s\n", (const char *) ids->pdata[i]);
  g_autofree char *ids_path = g_strconcat(path, ".ids.txt", NULL);
  const void *parts[2] = { h->str, x }, *lp[1] = { lines->str };
  size_t lens[2] = { h->len, n * e * sizeof(float) }, ll[1] = { lines->len };
  gboolean ok = write_atomic(ids_path, lp, ll, 1, error) &&
                write_atomic(path, parts, lens, 2, error);
  g_string_free(lines, TRUE);
  g_string_free(h, TRUE);
  return ok;
}

static gboolean
write_safetensors(const char *path, const float *x, size_t n, size_t e, GPtrArray *ids,
                  const char *kind, const char *model, GError **error)
{
  g_autofree char *sha = ct_file_sha256(model, error);
  if (!sha)
    return FALSE;
  JsonBuilder *b = json_builder_new();
  json_builder_begin_array(b);
  for (guint i = 0; i < ids->len; i++)
    json_builder_add_string_value(b, ids->pdata[i]);
  json_builder_end_array(b);
  JsonNode *root = json_builder_get_root(b);
  g_autofree char *json = json_to_string(root, FALSE);
  json_node_unref(root);
  g_object_unref(b);
  CtSafetensorsWriter *w = ct_safetensors_writer_new();
  int64_t shape[2] = { (int64_t) n, (int64_t) e };
  gboolean ok = ct_safetensors_writer_add(w, "features", CT_DTYPE_F32, 2, shape, x, error);
  ct_safetensors_writer_set_metadata(w, "ids", json);
  ct_safetensors_writer_set_metadata(w, "kind", kind);
  ct_safetensors_writer_set_metadata(w, "model", model);
  ct_safetensors_writer_set_metadata(w, "model_sha256", sha);
  ct_safetensors_writer_set_metadata(w, "cliptrain.version", ct_version());
  ok = ok && ct_safetensors_writer_write(w, path, error);
  ct_safetensors_writer_free(w);
  return ok;
}

/* ------------------------------------------------------------ texts */

/* the most text a --texts or --templates file may hold */
#define LINES_MAX_BYTES ((size_t) 256 << 20)

GPtrArray *
ct_cli_read_lines(const char *path, GError **error)
{
  g_autofree char *text = NULL;
  size_t len = 0;
  if (strcmp(path, "-") == 0) {
    GString *s = g_string_new(NULL);
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, stdin)) > 0 && s->len <= LINES_MAX_BYTES)
      g_string_append_len(s, buf, (gssize) k);
    len = s->len;
    text = g_string_free(s, FALSE);
    if (len > LINES_MAX_BYTES) {
      g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "standard input: more than %d MiB of text",
                  (int) (LINES_MAX_BYTES >> 20));
      return NULL;
    }
  } else if (!ct_file_read_all(path, "a text file", LINES_MAX_BYTES, &text, &len, error)) {
    return NULL; /* a folder, a FIFO or /dev/zero is refused, naming PATH */
  }
  if (memchr(text, '\0', len)) {
    g_set_error(error, CT_ERROR, CT_ERROR_FORMAT, "%s: holds a NUL byte", path);
    return NULL;
  }
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  char **lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    if (!l[1] && !**l)
      break; /* after the last newline */
    size_t k = strlen(*l);
    if (k && (*l)[k - 1] == '\r')
      (*l)[k - 1] = '\0';
    g_ptr_array_add(out, g_strdup(*l));
  }
  g_strfreev(lines);
  return out;
}

/* ------------------------------------------------------------ embed */

static int
fail(GError *error)
{
  ct_cli_error("embed: %s", error->message);
  g_error_free(error);
  return CT_EXIT_FAILURE;
}

int
ct_cli_embed(int argc, char **argv)
{
  g_autofree char *model = NULL, *vocab = NULL, *texts = NULL, *out = NULL;
  g_auto(GStrv) images = NULL;
  gint batch = 32, context_length = 0;
  gint vheads = 0, theads = 0;
  gboolean truncate = FALSE;
  GOptionEntry entries[] = {
    CT_CLI_MODEL_OPTIONS(model, vocab, vheads, theads),
    { "images", 'i', 0, G_OPTION_ARG_FILENAME_ARRAY, &images,
      "Images, or folders searched for .png/.jpg/.jpeg (more may follow as arguments)",
      "DIR|FILE" },
    { "texts", 't', 0, G_OPTION_ARG_FILENAME, &texts, "Texts, one per line ('-': stdin)", "FILE" },
    { "out", 'o', 0, G_OPTION_ARG_FILENAME, &out, "Features: F.safetensors or F.npy", "F" },
    { "batch", 'b', 0, G_OPTION_ARG_INT, &batch, "Samples per forward pass (32)", "N" },
    { "context-length", 'n', 0, G_OPTION_ARG_INT, &context_length,
      "Tokens per text, at most the model's (default: the model's)", "N" },
    { "truncate", 0, 0, G_OPTION_ARG_NONE, &truncate,
      "Cut texts longer than the context instead of failing", NULL },
    { NULL },
  };
  GError *error = NULL;
  gboolean ok = ct_cli_parse(
    &argc, &argv, entries, "- L2-normalised CLIP features of images or texts",
    "F.safetensors: tensor 'features' (N, E) F32, metadata ids (JSON array), kind,\n"
    "model_sha256.  F.npy: float32 (N, E), ids in F.npy.ids.txt, one per line.\n"
    "Exit status: 0 success, 1 failure, 2 bad usage.\n",
    &error);
  const char *usage = error ? error->message
                      : !model ? "--model FILE|RUN_DIR is required"
                      : !out ? "--out F is required"
                      : !images == !texts ? "give either --images or --texts"
                      : argc > 1 && !images ? "unexpected argument"
                      : !g_str_has_suffix(out, ".safetensors") && !g_str_has_suffix(out, ".npy")
                        ? "--out must end in .safetensors or .npy"
                      : batch < 1 ? "--batch must be positive"
                      : context_length < 0 ? "--context-length must be positive" : NULL;
  if (!ok || usage) {
    ct_cli_error("embed: %s", usage);
    g_clear_error(&error);
    return CT_EXIT_USAGE;
  }
  if (images && argc > 1) { /* --images a.png b.png: the rest are images too */
    GStrvBuilder *sb = g_strv_builder_new();
    g_strv_builder_addv(sb, (const char **) images);
    g_strv_builder_addv(sb, (const char **) argv + 1);
    g_strfreev(images);
    images = g_strv_builder_end(sb);
    g_strv_builder_unref(sb);
  }
  GPtrArray *ids = images ? ct_cli_image_paths(images, &error) : ct_cli_read_lines(texts, &error);
  if (!ids)
    return fail(error);
  if (ids->len == 0) {
    ct_cli_error("embed: %s: no texts in it", texts);
    g_ptr_array_unref(ids);
    return CT_EXIT_FAILURE;
  }
  for (guint i = 0; i < ids->len; i++)
    if (!g_utf8_validate(ids->pdata[i], -1, NULL) ||
        (g_str_has_suffix(out, ".npy") && strchr(ids->pdata[i], '\n'))) {
      if (images)
        g_set_error(&error, CT_ERROR, CT_ERROR_INVALID,
                    "%s: the file name is not valid UTF-8 or holds a newline",
                    (const char *) ids->pdata[i]);
      else
        g_set_error(&error, CT_ERROR, CT_ERROR_INVALID, "%s:%u: not valid UTF-8", texts, i + 1);
      g_ptr_array_unref(ids);
      return fail(error);
    }
  g_autofree char *mpath = NULL; /* the file --model names */
  CtModel *m = ct_cli_model_open(model, batch, vheads, theads, &mpath, &error);
  if (!m) {
    g_ptr_array_unref(ids);
    return fail(error);
  }
  int status = CT_EXIT_OK;
  const CtConfig *c = ct_model_config(m);
  float *feats = NULL;
  CtTokenizer *tok = NULL;
  if (context_length > c->context_length) {
    ct_cli_error("embed: --context-length %d is over the model's %d", context_length,
                 c->context_length);
    status = CT_EXIT_USAGE;
  } else if (images)
    feats = ct_cli_encode_images(m, (const char *const *) ids->pdata, ids->len, &error);
  else if ((tok = ct_cli_tokenizer(mpath, vocab, m, &error)))
    feats = ct_cli_encode_texts(m, tok, (const char *const *) ids->pdata, ids->len,
                                context_length ? context_length : c->context_length, truncate,
                                strcmp(texts, "-") ? texts : "stdin", &error);
  if (status == CT_EXIT_OK) {
    size_t E = (size_t) c->embed_dim;
    ok = feats && (g_str_has_suffix(out, ".npy")
                     ? write_npy(out, feats, ids->len, E, ids, &error)
                     : write_safetensors(out, feats, ids->len, E, ids, images ? "image" : "text",
                                         mpath, &error));
    if (!ok)
      status = fail(error);
  }
  g_free(feats);
  ct_tokenizer_free(tok);
  ct_model_free(m);
  g_ptr_array_unref(ids);
  return status;
}
