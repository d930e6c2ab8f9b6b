/*
 * spanjournal._speedups: the states-only fold of journal lines, in C.
 *
 * A Table reads blocks of complete journal lines and folds each line it is
 * certain about straight into hash tables, without making Python objects:
 * per chunk the latest dispatch (span id, host, pid, proc_start), whether
 * some attempt succeeded, and the last failure; and the set of failed span
 * ids. It is the same fold as spanjournal.ledger.Ledger._add for a ledger
 * read with detail=False.
 *
 * "Certain" means: msgspec, decoding the line into the state-only views
 * (spanjournal._schema.DispatchedState / CompletedState), would give an event
 * with exactly these values. Anything else - a blank line, a byte-order mark,
 * bad JSON, an unknown event, a wrong field type, a duplicate key, a missing
 * or empty span id, an escape or invalid UTF-8 in a field it keeps, an
 * integer of more than 18 digits, nesting deeper than MAX_DEPTH - is *deferred*:
 * feed() stops at that line and the Python reader decodes it, reports it if
 * it is bad, and folds the event (if any) with dispatch()/complete(). So the
 * C code never decides what a doubtful line means; it only takes the lines
 * whose meaning is plain.
 *
 * Afterwards the ledger asks the table (spanjournal._statefold): summary()
 * gives Python objects for the chunks not done and the failures only;
 * flags() and ids() answer for the rest. dump()/load() carry a reader
 * process's table to the parent in a parallel read. block_lines() serves
 * the pure-Python reader.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

#define MAX_DEPTH 64
#define INLINE_SPAN 24

/* ---------------------------------------------------------------- hashing */

static inline uint64_t
load64(const char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

static uint64_t
hash_bytes(const char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        h = (h ^ load64(p)) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    return h;
}

/* ------------------------------------------------- arena and string table */

typedef struct {
    char *data;
    size_t len, cap;
} Arena;

static int
arena_put(Arena *a, const char *p, size_t n, size_t *off)
{
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 1 << 16;
        while (a->len + n > cap)
            cap *= 2;
        char *data = PyMem_Realloc(a->data, cap);
        if (data == NULL)
            return -1;
        a->data = data;
        a->cap = cap;
    }
    memcpy(a->data + a->len, p, n);
    *off = a->len;
    a->len += n;
    return 0;
}

/* Byte strings -> dense indices 0..count-1, in insertion order. Open
 * addressing, at most half full; a slot holds the upper half of the key's
 * hash beside its index, so a probe rarely touches the key arrays. */
typedef struct {
    uint64_t *slots; /* 0: empty, else (hash >> 32) << 32 | (index + 1) */
    size_t mask;
    size_t count, cap;
    uint64_t *hashes;
    size_t *offs;
    uint32_t *lens;
    Arena keys;
} StrTable;

static void
st_free(StrTable *t)
{
    PyMem_Free(t->slots);
    PyMem_Free(t->hashes);
    PyMem_Free(t->offs);
    PyMem_Free(t->lens);
    PyMem_Free(t->keys.data);
    memset(t, 0, sizeof(*t));
}

static int
st_rehash(StrTable *t, size_t nslots)
{
    uint64_t *slots = PyMem_Calloc(nslots, sizeof(uint64_t));
    if (slots == NULL)
        return -1;
    size_t mask = nslots - 1;
    for (size_t i = 0; i < t->count; i++) {
        size_t s = t->hashes[i] & mask;
        while (slots[s])
            s = (s + 1) & mask;
        slots[s] = (t->hashes[i] & 0xFFFFFFFF00000000ull) | (i + 1);
    }
    PyMem_Free(t->slots);
    t->slots = slots;
    t->mask = mask;
    return 0;
}

static inline const char *
st_key(const StrTable *t, size_t i)
{
    return t->keys.data + t->offs[i];
}

/* The index of key p[0:n]; with insert, adds it when missing (*added = 1).
 * Returns -1 when missing (no insert) and -2 when out of memory. */
static Py_ssize_t
st_get(StrTable *t, const char *p, size_t n, int insert, int *added)
{
    if (added)
        *added = 0;
    if (n > UINT32_MAX)
        return -2;
    if (t->slots == NULL) {
        if (!insert)
            return -1;
        if (st_rehash(t, 1024) < 0)
            return -2;
    }
    uint64_t h = hash_bytes(p, n), tag = h & 0xFFFFFFFF00000000ull;
    size_t s = h & t->mask;
    for (uint64_t v; (v = t->slots[s]) != 0; s = (s + 1) & t->mask) {
        if ((v & 0xFFFFFFFF00000000ull) != tag)
            continue;
        size_t i = (size_t)(v & 0xFFFFFFFFu) - 1;
        if (t->hashes[i] == h && t->lens[i] == n && memcmp(st_key(t, i), p, n) == 0)
            return (Py_ssize_t)i;
    }
    if (!insert)
        return -1;
    if (t->count >= UINT32_MAX - 1)
        return -2;
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        uint64_t *hashes = PyMem_Realloc(t->hashes, cap * sizeof(uint64_t));
        if (hashes == NULL)
            return -2;
        t->hashes = hashes;
        size_t *offs = PyMem_Realloc(t->offs, cap * sizeof(size_t));
        if (offs == NULL)
            return -2;
        t->offs = offs;
        uint32_t *lens = PyMem_Realloc(t->lens, cap * sizeof(uint32_t));
        if (lens == NULL)
            return -2;
        t->lens = lens;
        t->cap = cap;
    }
    size_t i = t->count;
    if (arena_put(&t->keys, p, n, &t->offs[i]) < 0)
        return -2;
    t->hashes[i] = h;
    t->lens[i] = (uint32_t)n;
    t->count++;
    t->slots[s] = tag | (i + 1);
    if (t->count * 2 > t->mask + 1 && st_rehash(t, (t->mask + 1) * 2) < 0)
        return -2;
    if (added)
        *added = 1;
    return (Py_ssize_t)i;
}

/* ------------------------------------------------------------- the table */

enum { F_DISPATCHED = 1, F_DONE = 2, F_FAILED = 4, F_HAS_PID = 8, F_HAS_PROC = 16 };

/* A span id: inline when short (OpenTelemetry's are 16 hex digits), else in the arena. */
typedef struct {
    uint32_t len;
    union {
        char inline_[INLINE_SPAN];
        size_t off;
    } u;
} Span;

typedef struct {
    uint32_t flags;
    int32_t host; /* index into hosts, or -1 for none */
    int64_t pid, proc_start;
    Span span;      /* the latest dispatch's */
    Span fail_span; /* the last failure's */
} Entry;

typedef struct {
    PyObject_HEAD
    StrTable chunks; /* chunk id -> Entry (same index) */
    Entry *entries;
    size_t entries_cap;
    StrTable hosts;
    StrTable failed_spans;
    Arena long_spans;
    uint32_t *dispatch_order; /* chunk indices, by first dispatch */
    size_t n_dispatch, dispatch_cap;
    uint32_t *failure_order; /* chunk indices, by first failure */
    size_t n_failure, failure_cap;
} Table;

static int
append_index(uint32_t **arr, size_t *n, size_t *cap, size_t value)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 1024;
        uint32_t *a = PyMem_Realloc(*arr, c * sizeof(uint32_t));
        if (a == NULL)
            return -1;
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = (uint32_t)value;
    return 0;
}

static int
span_set(Table *t, Span *s, const char *p, size_t n)
{
    if (n > UINT32_MAX)
        return -1;
    s->len = (uint32_t)n;
    if (n <= INLINE_SPAN) {
        memcpy(s->u.inline_, p, n);
        return 0;
    }
    return arena_put(&t->long_spans, p, n, &s->u.off);
}

static const char *
span_data(const Table *t, const Span *s)
{
    return s->len <= INLINE_SPAN ? s->u.inline_ : t->long_spans.data + s->u.off;
}

/* The entry of a chunk id, created when missing; NULL when out of memory. */
static Entry *
chunk_entry(Table *t, const char *p, size_t n, size_t *index)
{
    int added;
    Py_ssize_t i = st_get(&t->chunks, p, n, 1, &added);
    if (i < 0)
        return NULL;
    if (added) {
        if ((size_t)i >= t->entries_cap) {
            size_t cap = t->entries_cap ? t->entries_cap * 2 : 1024;
            Entry *e = PyMem_Realloc(t->entries, cap * sizeof(Entry));
            if (e == NULL)
                return NULL;
            t->entries = e;
            t->entries_cap = cap;
        }
        memset(&t->entries[i], 0, sizeof(Entry));
        t->entries[i].host = -1;
    }
    *index = (size_t)i;
    return &t->entries[i];
}

typedef struct {
    const char *p;
    size_t n;
} Bytes;

/* Make this the entry's latest dispatch. Returns -1 when out of memory. */
static int
fold_dispatch_fields(Table *t, Entry *e, Bytes span, const Bytes *host, const int64_t *pid, const int64_t *proc)
{
    if (span_set(t, &e->span, span.p, span.n) < 0)
        return -1;
    if (host != NULL) {
        Py_ssize_t h = st_get(&t->hosts, host->p, host->n, 1, NULL);
        if (h < 0 || h > INT32_MAX)
            return -1;
        e->host = (int32_t)h;
    }
    else
        e->host = -1;
    e->flags &= ~(F_HAS_PID | F_HAS_PROC);
    if (pid != NULL) {
        e->pid = *pid;
        e->flags |= F_HAS_PID;
    }
    if (proc != NULL) {
        e->proc_start = *proc;
        e->flags |= F_HAS_PROC;
    }
    return 0;
}

/* One dispatch, already validated. Returns -1 when out of memory. */
static int
fold_dispatch(Table *t, Bytes chunk, Bytes span, const Bytes *host, const int64_t *pid, const int64_t *proc)
{
    size_t i;
    Entry *e = chunk_entry(t, chunk.p, chunk.n, &i);
    if (e == NULL)
        return -1;
    if (!(e->flags & F_DISPATCHED)) {
        if (append_index(&t->dispatch_order, &t->n_dispatch, &t->dispatch_cap, i) < 0)
            return -1;
        e->flags |= F_DISPATCHED;
    }
    return fold_dispatch_fields(t, e, span, host, pid, proc);
}

/* One completion, already validated. Returns -1 when out of memory. */
static int
fold_completion(Table *t, Bytes chunk, Bytes span, int success)
{
    size_t i;
    Entry *e = chunk_entry(t, chunk.p, chunk.n, &i);
    if (e == NULL)
        return -1;
    if (success) {
        e->flags |= F_DONE;
        return 0;
    }
    if (st_get(&t->failed_spans, span.p, span.n, 1, NULL) < 0)
        return -1;
    if (!(e->flags & F_FAILED)) {
        if (append_index(&t->failure_order, &t->n_failure, &t->failure_cap, i) < 0)
            return -1;
        e->flags |= F_FAILED;
    }
    return span_set(t, &e->fail_span, span.p, span.n);
}

/* ------------------------------------------------------------ the parser */

/* What a line said about one of the keys the fold reads. */
enum { V_ABSENT = 0, V_STR, V_NULL, V_INT, V_TRUE, V_FALSE, V_OTHER };

typedef struct {
    int type;
    Bytes s;   /* V_STR: the raw bytes; plain = no escape, valid UTF-8 */
    int plain;
    int64_t i; /* V_INT */
} Value;

enum { K_EVENT, K_CHUNK, K_SPAN, K_SUCCESS, K_HOST, K_PID, K_PROC, N_KEYS };

typedef struct {
    const char *p, *end;
    Value v[N_KEYS];
} Parser;

#define WS(c) ((c) == ' ' || (c) == '\t' || (c) == '\r')
#define IS_DIGIT(c) ((unsigned char)((c) - '0') <= 9)

/* Every line given to the parser is followed by its newline (ps->end points
 * at it): a scan that stops at '\n' or any other non-blank byte needs no
 * bounds check. */
static inline void
skip_ws(Parser *ps)
{
    while ((unsigned char)*ps->p <= ' ' && WS(*ps->p))
        ps->p++;
}

static inline int
is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define HAS_ZERO(x) (((x) - ONES) & ~(x) & HIGHS)

/* Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF). */
static int
valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        }
        else
            return 0;
        if (n - i <= k)
            return 0; /* cut short */
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* A string at ps->p (just past its opening quote). On success ps->p is past
 * the closing quote, out (if given) holds the raw content and whether it is
 * plain (no escapes, strict UTF-8). Returns 0 to defer the line. */
static ALWAYS_INLINE int
parse_string(Parser *ps, Bytes *out, int *plain)
{
    const char *start = ps->p, *end = ps->end, *p = ps->p;
    int escaped = 0, high = 0;
    for (;;) {
#ifdef __SSE2__
        /* 16 bytes at a time up to a quote, a backslash, a control or a non-ASCII byte. */
        const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(' ');
        while (end - p >= 16) {
            __m128i w = _mm_loadu_si128((const __m128i *)p);
            __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(w, quote), _mm_cmpeq_epi8(w, bslash)),
                                        _mm_cmplt_epi8(w, space)); /* signed: bytes >= 0x80 too */
            int mask = _mm_movemask_epi8(stop);
            if (mask) {
                p += __builtin_ctz((unsigned)mask);
                break;
            }
            p += 16;
        }
#else
        while (end - p >= 8) {
            uint64_t w = load64(p);
            uint64_t stop = HAS_ZERO(w ^ (0x22 * ONES)) | HAS_ZERO(w ^ (0x5C * ONES)) | ((w - 0x20 * ONES) & ~w & HIGHS);
            if (stop)
                break;
            high |= (w & HIGHS) != 0;
            p += 8;
        }
#endif
        if (p >= end)
            return 0;
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            break;
        if (c < 0x20)
            return 0; /* a raw control character: not JSON */
        if (c == '\\') {
            if (end - p < 2)
                return 0;
            char e = p[1];
            if (e == 'u') {
                if (end - p < 6 || !is_hex(p[2]) || !is_hex(p[3]) || !is_hex(p[4]) || !is_hex(p[5]))
                    return 0;
                char u = p[2] | 0x20;
                if (u == 'd' && (p[3] | 0x20) >= '8')
                    return 0; /* a surrogate escape: let the full decoder judge */
                p += 6;
            }
            else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't')
                p += 2;
            else
                return 0;
            escaped = 1;
            continue;
        }
        high |= c >= 0x80;
        p++;
    }
    if (out != NULL) {
        out->p = start;
        out->n = (size_t)(p - start);
        *plain = !escaped && (!high || valid_utf8((const unsigned char *)start, out->n));
    }
    ps->p = p + 1;
    return 1;
}

/* A number. *is_int: an integer that fits in int64 (value in *value). */
static int
parse_number(Parser *ps, int *is_int, int64_t *value)
{
    /* No bounds checks: the newline after the line stops every loop. */
    const char *p = ps->p;
    int neg = *p == '-';
    p += neg;
    if (!IS_DIGIT(*p))
        return 0;
    const char *digits = p;
    uint64_t v = 0;
    if (*p == '0')
        p++;
    else
        while (IS_DIGIT(*p))
            v = v * 10 + (uint64_t)(*p++ - '0'); /* wraps past 19 digits: unused then */
    size_t ndigits = (size_t)(p - digits);
    int integral = 1;
    if (*p == '.') {
        integral = 0;
        p++;
        if (!IS_DIGIT(*p))
            return 0;
        while (IS_DIGIT(*p))
            p++;
    }
    if (*p == 'e' || *p == 'E') {
        integral = 0;
        p++;
        if (*p == '+' || *p == '-')
            p++;
        if (!IS_DIGIT(*p))
            return 0;
        while (IS_DIGIT(*p))
            p++;
    }
    *is_int = integral && ndigits <= 18;
    if (*is_int)
        *value = neg ? -(int64_t)v : (int64_t)v;
    ps->p = p;
    return 1;
}

static int
parse_literal(Parser *ps, const char *word, size_t n)
{
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return 0;
    ps->p += n;
    return 1;
}

static int skip_value(Parser *ps, int depth);

/* Any JSON value at ps->p, into v (type and, for strings and ints, content). */
static int
parse_value(Parser *ps, Value *v, int depth)
{
    if (ps->p >= ps->end)
        return 0;
    switch (*ps->p) {
    case '"':
        ps->p++;
        v->type = V_STR;
        return parse_string(ps, &v->s, &v->plain);
    case 'n':
        v->type = V_NULL;
        return parse_literal(ps, "null", 4);
    case 't':
        v->type = V_TRUE;
        return parse_literal(ps, "true", 4);
    case 'f':
        v->type = V_FALSE;
        return parse_literal(ps, "false", 5);
    case '{':
    case '[':
        v->type = V_OTHER;
        return skip_value(ps, depth);
    default: {
        int is_int;
        if (!parse_number(ps, &is_int, &v->i))
            return 0;
        v->type = is_int ? V_INT : V_OTHER;
        return 1;
    }
    }
}

/* Any JSON value, validated and passed over. */
static int
skip_value(Parser *ps, int depth)
{
    if (ps->p >= ps->end)
        return 0;
    char c = *ps->p;
    if (c == '"') {
        ps->p++;
        return parse_string(ps, NULL, NULL);
    }
    if (c != '{' && c != '[') {
        Value v;
        return parse_value(ps, &v, depth);
    }
    if (depth >= MAX_DEPTH)
        return 0;
    char close = c == '{' ? '}' : ']';
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        return 1;
    }
    for (;;) {
        if (close == '}') {
            if (ps->p >= ps->end || *ps->p != '"')
                return 0;
            ps->p++;
            if (!parse_string(ps, NULL, NULL))
                return 0;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return 0;
            ps->p++;
            skip_ws(ps);
        }
        if (!skip_value(ps, depth + 1))
            return 0;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return 0;
        if (*ps->p == close) {
            ps->p++;
            return 1;
        }
        if (*ps->p != ',')
            return 0;
        ps->p++;
        skip_ws(ps);
    }
}

static int
key_id(const char *p, size_t n)
{
    switch (n) {
    case 3:
        return memcmp(p, "pid", 3) == 0 ? K_PID : -1;
    case 4:
        return memcmp(p, "host", 4) == 0 ? K_HOST : -1;
    case 5:
        return memcmp(p, "event", 5) == 0 ? K_EVENT : -1;
    case 7:
        if (memcmp(p, "span_id", 7) == 0)
            return K_SPAN;
        return memcmp(p, "success", 7) == 0 ? K_SUCCESS : -1;
    case 8:
        return memcmp(p, "chunk_id", 8) == 0 ? K_CHUNK : -1;
    case 10:
        return memcmp(p, "proc_start", 10) == 0 ? K_PROC : -1;
    default:
        return -1;
    }
}

/* Parse one line (without its newline) into ps->v. Returns 0 to defer it. */
static int
parse_line(Parser *ps)
{
    for (int k = 0; k < N_KEYS; k++)
        ps->v[k].type = V_ABSENT;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '{')
        return 0;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}')
        return 0; /* no event name */
    for (;;) {
        if (ps->p >= ps->end || *ps->p != '"')
            return 0;
        ps->p++;
        Bytes key;
        int plain;
        if (!parse_string(ps, &key, &plain))
            return 0;
        if (!plain)
            return 0; /* an escaped key might spell one the fold reads */
        int k = key_id(key.p, key.n);
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':')
            return 0;
        ps->p++;
        skip_ws(ps);
        if (k >= 0) {
            if (ps->v[k].type != V_ABSENT)
                return 0; /* a duplicate key */
            if (!parse_value(ps, &ps->v[k], 0))
                return 0;
        }
        else if (!skip_value(ps, 0))
            return 0;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return 0;
        if (*ps->p == '}')
            break;
        if (*ps->p != ',')
            return 0;
        ps->p++;
        skip_ws(ps);
    }
    ps->p++;
    skip_ws(ps);
    return ps->p == ps->end;
}

#ifdef __SSE2__
/* The fast way through a common line: no backslash, no control character,
 * no byte above 0x7F, at most MAX_QUOTES quotes. Then every quote opens or
 * closes a string, and one SSE2 pass finds them all; the walk below only
 * checks the few bytes between strings. Returns 1 with ps->v set as
 * parse_line() would, 0 when the line is not one of these (parse_line()
 * then reads it) or is not valid JSON (parse_line() then fails too). */
#define MAX_QUOTES 256

static int
parse_line_fast(Parser *ps, const char *limit)
{
    const char *line = ps->p, *end = ps->end;
    size_t n = (size_t)(end - line);
    uint16_t q[MAX_QUOTES + 2];
    size_t nq = 0;
    if (n > 65535)
        return 0;
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(' ');
    size_t off = 0;
    for (; off < n; off += 16) {
        unsigned valid = n - off >= 16 ? 0xFFFFu : (1u << (n - off)) - 1;
        __m128i w;
        if (line + off + 16 <= limit)
            w = _mm_loadu_si128((const __m128i *)(line + off));
        else {
            char tmp[16] = {0};
            memcpy(tmp, line + off, limit - (line + off) < 16 ? (size_t)(limit - (line + off)) : 16);
            w = _mm_loadu_si128((const __m128i *)tmp);
        }
        unsigned odd = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(w, bslash), _mm_cmplt_epi8(w, space)));
        if (odd & valid)
            return 0;
        unsigned quotes = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(w, quote)) & valid;
        if (nq > MAX_QUOTES - 16) /* room for this chunk's quotes */
            return 0;
        while (quotes) {
            q[nq++] = (uint16_t)(off + (unsigned)__builtin_ctz(quotes));
            quotes &= quotes - 1;
        }
    }
    if (nq & 1)
        return 0;
    q[nq] = q[nq + 1] = (uint16_t)n; /* sentinels: no more strings */
    for (int k = 0; k < N_KEYS; k++)
        ps->v[k].type = V_ABSENT;
    skip_ws(ps);
    if (*ps->p != '{')
        return 0;
    ps->p++;
    skip_ws(ps);
    size_t i = 0;
    for (;;) {
        if (i >= nq || ps->p != line + q[i])
            return 0; /* a key must open here */
        const char *key = line + q[i] + 1;
        size_t klen = (size_t)(q[i + 1] - q[i] - 1);
        ps->p = line + q[i + 1] + 1;
        i += 2;
        skip_ws(ps);
        if (*ps->p != ':')
            return 0;
        ps->p++;
        skip_ws(ps);
        int k = key_id(key, klen);
        Value scratch, *v = k >= 0 ? &ps->v[k] : &scratch;
        if (k >= 0 && v->type != V_ABSENT)
            return 0; /* a duplicate key */
        if (i < nq && ps->p == line + q[i]) { /* a string */
            v->type = V_STR;
            v->s.p = line + q[i] + 1;
            v->s.n = (size_t)(q[i + 1] - q[i] - 1);
            v->plain = 1;
            ps->p = line + q[i + 1] + 1;
            i += 2;
        }
        else {
            if (!parse_value(ps, v, 0))
                return 0;
            while (i < nq && line + q[i] < ps->p) /* quotes inside a nested value */
                i++;
            if (i & 1)
                return 0;
        }
        skip_ws(ps);
        if (*ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            continue;
        }
        if (*ps->p != '}')
            return 0;
        ps->p++;
        skip_ws(ps);
        return ps->p == end && i == nq;
    }
}
#endif

static inline int
plain_str(const Value *v)
{
    return v->type == V_STR && v->plain;
}

static inline int
equals(const Value *v, const char *s, size_t n)
{
    return v->type == V_STR && v->s.n == n && memcmp(v->s.p, s, n) == 0;
}

/* Fold a parsed line if its meaning is plain. 1: folded, 0: defer, -1: no memory. */
static int
fold_line(Table *t, Parser *ps)
{
    Value *v = ps->v;
    if (!plain_str(&v[K_CHUNK]) || !plain_str(&v[K_SPAN]) || v[K_SPAN].s.n == 0)
        return 0;
    if (equals(&v[K_EVENT], "subagent_dispatched", 19)) {
        const Value *h = &v[K_HOST], *pid = &v[K_PID], *proc = &v[K_PROC];
        if (!(h->type == V_ABSENT || h->type == V_NULL || plain_str(h)))
            return 0;
        if (!(pid->type == V_ABSENT || pid->type == V_NULL || pid->type == V_INT))
            return 0;
        if (!(proc->type == V_ABSENT || proc->type == V_NULL || proc->type == V_INT))
            return 0;
        int r = fold_dispatch(t, v[K_CHUNK].s, v[K_SPAN].s, h->type == V_STR ? &h->s : NULL,
                              pid->type == V_INT ? &pid->i : NULL, proc->type == V_INT ? &proc->i : NULL);
        return r < 0 ? -1 : 1;
    }
    if (equals(&v[K_EVENT], "subagent_completed", 18)) {
        int success;
        if (v[K_SUCCESS].type == V_TRUE)
            success = 1;
        else if (v[K_SUCCESS].type == V_FALSE)
            success = 0;
        else
            return 0;
        return fold_completion(t, v[K_CHUNK].s, v[K_SPAN].s, success) < 0 ? -1 : 1;
    }
    return 0;
}

/* ------------------------------------------------------- Python interface */

static void
Table_dealloc(Table *t)
{
    st_free(&t->chunks);
    st_free(&t->hosts);
    st_free(&t->failed_spans);
    PyMem_Free(t->entries);
    PyMem_Free(t->long_spans.data);
    PyMem_Free(t->dispatch_order);
    PyMem_Free(t->failure_order);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

PyDoc_STRVAR(feed_doc,
"feed(block, start, end) -> (stop, lines)\n\n"
"Fold the lines of ``block[start:end]`` (a bytes-like object; the line ending\n"
"at ``end`` included if it ends with a newline) one by one, until a line to\n"
"defer. ``stop`` is the offset where that line starts (else where the last\n"
"complete line ends), ``lines`` how many lines were folded: each is one event.");

static PyObject *
Table_feed(Table *t, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "y*nn:feed", &view, &start, &stop))
        return NULL;
    if (start < 0 || stop > view.len || start > stop) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "feed: start and end must be offsets into the block");
        return NULL;
    }
    const char *base = view.buf, *end = base + stop, *p = base + start;
    Py_ssize_t lines = 0;
    int failed = 0;
    /* The GIL stays held: the tables grow with PyMem_Realloc. */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        Parser ps;
        ps.p = p;
        ps.end = nl;
#ifdef __SSE2__
        if (!parse_line_fast(&ps, end)) {
            ps.p = p;
            if (!parse_line(&ps))
                break;
        }
#else
        if (!parse_line(&ps))
            break;
#endif
        int r = fold_line(t, &ps);
        if (r <= 0) {
            failed = r < 0;
            break;
        }
        lines++;
        p = nl + 1;
    }
    PyBuffer_Release(&view);
    if (failed)
        return PyErr_NoMemory();
    return Py_BuildValue("(nn)", (Py_ssize_t)(p - base), lines);
}

/* The UTF-8 of a str, lone surrogates passed through (msgspec decodes an
 * escaped one); *holder owns the bytes until released. */
static int
utf8_of(PyObject *s, Bytes *out, PyObject **holder)
{
    *holder = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (*holder == NULL)
        return -1;
    out->p = PyBytes_AS_STRING(*holder);
    out->n = (size_t)PyBytes_GET_SIZE(*holder);
    return 0;
}

static int
optional_int(PyObject *o, int64_t *out, int64_t **ptr)
{
    if (o == Py_None) {
        *ptr = NULL;
        return 0;
    }
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    *ptr = out;
    return 0;
}

PyDoc_STRVAR(dispatch_doc,
"dispatch(chunk_id, span_id, host, pid, proc_start)\n\n"
"Fold one dispatch decoded in Python (host, pid, proc_start may be None).\n"
"OverflowError for a pid or proc_start beyond 64 bits.");

static PyObject *
Table_dispatch(Table *t, PyObject *args)
{
    PyObject *chunk, *span, *host, *pid, *proc, *hold[3] = {NULL, NULL, NULL}, *result = NULL;
    if (!PyArg_ParseTuple(args, "UUOOO:dispatch", &chunk, &span, &host, &pid, &proc))
        return NULL;
    Bytes c, s, h;
    int64_t pid_v, proc_v, *pid_p, *proc_p;
    if (host != Py_None && !PyUnicode_Check(host)) {
        PyErr_SetString(PyExc_TypeError, "host must be a str or None");
        return NULL;
    }
    if (utf8_of(chunk, &c, &hold[0]) < 0 || utf8_of(span, &s, &hold[1]) < 0 ||
        (host != Py_None && utf8_of(host, &h, &hold[2]) < 0))
        goto out;
    if (optional_int(pid, &pid_v, &pid_p) < 0 || optional_int(proc, &proc_v, &proc_p) < 0)
        goto out;
    if (fold_dispatch(t, c, s, host == Py_None ? NULL : &h, pid_p, proc_p) < 0) {
        PyErr_NoMemory();
        goto out;
    }
    result = Py_None;
    Py_INCREF(result);
out:
    for (int k = 0; k < 3; k++)
        Py_XDECREF(hold[k]);
    return result;
}

PyDoc_STRVAR(complete_doc,
"complete(chunk_id, span_id, success)\n\nFold one completion decoded in Python.");

static PyObject *
Table_complete(Table *t, PyObject *args)
{
    PyObject *chunk, *span, *hold[2] = {NULL, NULL}, *result = NULL;
    int success;
    if (!PyArg_ParseTuple(args, "UUp:complete", &chunk, &span, &success))
        return NULL;
    Bytes c, s;
    if (utf8_of(chunk, &c, &hold[0]) < 0 || utf8_of(span, &s, &hold[1]) < 0)
        goto out;
    if (fold_completion(t, c, s, success) < 0) {
        PyErr_NoMemory();
        goto out;
    }
    result = Py_None;
    Py_INCREF(result);
out:
    Py_XDECREF(hold[0]);
    Py_XDECREF(hold[1]);
    return result;
}

static PyObject *
decode(const char *p, size_t n)
{
    return PyUnicode_DecodeUTF8(p, (Py_ssize_t)n, "surrogatepass");
}

static PyObject *
span_str(const Table *t, const Span *s)
{
    return decode(span_data(t, s), s->len);
}

PyDoc_STRVAR(latest_span_doc,
"latest_span(chunk_id) -> str | None\n\nThe span id of the chunk's latest dispatch.");

static PyObject *
Table_latest_span(Table *t, PyObject *arg)
{
    Bytes c;
    PyObject *hold;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "chunk_id must be a str");
        return NULL;
    }
    if (utf8_of(arg, &c, &hold) < 0)
        return NULL;
    Py_ssize_t i = st_get(&t->chunks, c.p, c.n, 0, NULL);
    Py_DECREF(hold);
    if (i < 0 || !(t->entries[i].flags & F_DISPATCHED))
        Py_RETURN_NONE;
    return span_str(t, &t->entries[i].span);
}

static PyObject *
optional_long(int has, int64_t v)
{
    if (!has)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(v);
}

PyDoc_STRVAR(summary_doc,
"summary() -> (open, failed_spans, failures)\n\n"
"``open``: a list of (chunk_id, span_id, host, pid, proc_start), the latest\n"
"dispatch of each dispatched chunk not done, by first dispatch;\n"
"``failed_spans``: the set of span ids of failed completions; ``failures``:\n"
"a list of (chunk_id, span_id), each chunk's last failure, by first failure.\n"
"Everything else is asked for chunk by chunk (flags(), ids()).");

static PyObject *
Table_summary(Table *t, PyObject *Py_UNUSED(ignored))
{
    PyObject *hosts = NULL, *open = NULL, *failed = NULL, *failures = NULL, *result = NULL;
    if ((hosts = PyList_New((Py_ssize_t)t->hosts.count)) == NULL)
        goto out;
    for (size_t i = 0; i < t->hosts.count; i++) {
        PyObject *s = decode(st_key(&t->hosts, i), t->hosts.lens[i]);
        if (s == NULL)
            goto out;
        PyList_SET_ITEM(hosts, i, s);
    }
    if ((open = PyList_New(0)) == NULL || (failed = PySet_New(NULL)) == NULL ||
        (failures = PyList_New((Py_ssize_t)t->n_failure)) == NULL)
        goto out;
    for (size_t k = 0; k < t->n_dispatch; k++) {
        size_t i = t->dispatch_order[k];
        const Entry *e = &t->entries[i];
        if (e->flags & F_DONE)
            continue;
        PyObject *host = e->host >= 0 ? PyList_GET_ITEM(hosts, e->host) : Py_None;
        PyObject *id = decode(st_key(&t->chunks, i), t->chunks.lens[i]);
        PyObject *span = span_str(t, &e->span);
        PyObject *pid = optional_long(e->flags & F_HAS_PID, e->pid);
        PyObject *proc = optional_long(e->flags & F_HAS_PROC, e->proc_start);
        PyObject *item = (id && span && pid && proc) ? PyTuple_Pack(5, id, span, host, pid, proc) : NULL;
        Py_XDECREF(id);
        Py_XDECREF(span);
        Py_XDECREF(pid);
        Py_XDECREF(proc);
        if (item == NULL || PyList_Append(open, item) < 0) {
            Py_XDECREF(item);
            goto out;
        }
        Py_DECREF(item);
    }
    for (size_t i = 0; i < t->failed_spans.count; i++) {
        PyObject *s = decode(st_key(&t->failed_spans, i), t->failed_spans.lens[i]);
        int r = s == NULL ? -1 : PySet_Add(failed, s);
        Py_XDECREF(s);
        if (r < 0)
            goto out;
    }
    for (size_t k = 0; k < t->n_failure; k++) {
        size_t i = t->failure_order[k];
        PyObject *id = decode(st_key(&t->chunks, i), t->chunks.lens[i]);
        PyObject *span = span_str(t, &t->entries[i].fail_span);
        PyObject *item = (id && span) ? PyTuple_Pack(2, id, span) : NULL;
        Py_XDECREF(id);
        Py_XDECREF(span);
        if (item == NULL)
            goto out;
        PyList_SET_ITEM(failures, k, item);
    }
    result = PyTuple_Pack(3, open, failed, failures);
out:
    Py_XDECREF(hosts);
    Py_XDECREF(open);
    Py_XDECREF(failed);
    Py_XDECREF(failures);
    return result;
}

PyDoc_STRVAR(flags_doc,
"flags(chunk_id) -> int\n\n"
"What the table knows of one chunk: 0 when nothing, else DISPATCHED | DONE |\n"
"FAILED bits (1, 2, 4).");

static PyObject *
Table_flags(Table *t, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "chunk_id must be a str");
        return NULL;
    }
    Py_ssize_t n;
    const char *p = PyUnicode_AsUTF8AndSize(arg, &n); /* cached in the str */
    Py_ssize_t i;
    if (p != NULL)
        i = st_get(&t->chunks, p, (size_t)n, 0, NULL);
    else { /* lone surrogates */
        PyErr_Clear();
        Bytes c;
        PyObject *hold;
        if (utf8_of(arg, &c, &hold) < 0)
            return NULL;
        i = st_get(&t->chunks, c.p, c.n, 0, NULL);
        Py_DECREF(hold);
    }
    return PyLong_FromLong(i < 0 ? 0 : (long)(t->entries[i].flags & (F_DISPATCHED | F_DONE | F_FAILED)));
}

PyDoc_STRVAR(ids_doc,
"ids(flag) -> list[str]\n\n"
"With DISPATCHED (1): the dispatched chunk ids, by first dispatch. With DONE\n"
"(2): the chunk ids with a success, by first appearance.");

static PyObject *
Table_ids(Table *t, PyObject *arg)
{
    long flag = PyLong_AsLong(arg);
    if (flag == -1 && PyErr_Occurred())
        return NULL;
    if (flag != F_DISPATCHED && flag != F_DONE) {
        PyErr_SetString(PyExc_ValueError, "ids: flag must be 1 (dispatched) or 2 (done)");
        return NULL;
    }
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    size_t n = flag == F_DISPATCHED ? t->n_dispatch : t->chunks.count;
    for (size_t k = 0; k < n; k++) {
        size_t i = flag == F_DISPATCHED ? t->dispatch_order[k] : k;
        if (!(t->entries[i].flags & flag))
            continue;
        PyObject *id = decode(st_key(&t->chunks, i), t->chunks.lens[i]);
        int r = id == NULL ? -1 : PyList_Append(out, id);
        Py_XDECREF(id);
        if (r < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

PyDoc_STRVAR(counts_doc, "counts() -> (chunks, dispatched, done)\n\nHow many chunk ids are known, dispatched, done.");

static PyObject *
Table_counts(Table *t, PyObject *Py_UNUSED(ignored))
{
    size_t done = 0;
    for (size_t i = 0; i < t->chunks.count; i++)
        done += (t->entries[i].flags & F_DONE) != 0;
    return Py_BuildValue("(nnn)", (Py_ssize_t)t->chunks.count, (Py_ssize_t)t->n_dispatch, (Py_ssize_t)done);
}

/* ------------------------------------------- dump and load (parallel reads) */

typedef struct {
    char *data;
    size_t len, cap;
    int failed;
} Out;

static void
out_put(Out *o, const void *p, size_t n)
{
    if (o->failed)
        return;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap : 1 << 16;
        while (o->len + n > cap)
            cap *= 2;
        char *data = PyMem_Realloc(o->data, cap);
        if (data == NULL) {
            o->failed = 1;
            return;
        }
        o->data = data;
        o->cap = cap;
    }
    memcpy(o->data + o->len, p, n);
    o->len += n;
}

static void
out_u32(Out *o, uint32_t v)
{
    out_put(o, &v, 4);
}

static void
out_str(Out *o, const char *p, size_t n)
{
    out_u32(o, (uint32_t)n);
    out_put(o, p, n);
}

PyDoc_STRVAR(dump_doc,
"dump() -> bytes\n\n"
"The whole table as bytes, for load() in another table of the same build\n"
"(a reader process sends its part of a journal this way).");

static PyObject *
Table_dump(Table *t, PyObject *Py_UNUSED(ignored))
{
    Out o = {NULL, 0, 0, 0};
    out_put(&o, "SJT1", 4);
    out_u32(&o, (uint32_t)t->chunks.count);
    for (size_t i = 0; i < t->chunks.count; i++) {
        const Entry *e = &t->entries[i];
        out_str(&o, st_key(&t->chunks, i), t->chunks.lens[i]);
        out_u32(&o, e->flags);
        out_put(&o, &e->pid, 8);
        out_put(&o, &e->proc_start, 8);
        if (e->host >= 0)
            out_str(&o, st_key(&t->hosts, e->host), t->hosts.lens[e->host]);
        else
            out_u32(&o, UINT32_MAX);
        out_str(&o, span_data(t, &e->span), e->span.len);
        out_str(&o, span_data(t, &e->fail_span), e->fail_span.len);
    }
    out_u32(&o, (uint32_t)t->n_dispatch);
    out_put(&o, t->dispatch_order, t->n_dispatch * 4);
    out_u32(&o, (uint32_t)t->n_failure);
    out_put(&o, t->failure_order, t->n_failure * 4);
    out_u32(&o, (uint32_t)t->failed_spans.count);
    for (size_t i = 0; i < t->failed_spans.count; i++)
        out_str(&o, st_key(&t->failed_spans, i), t->failed_spans.lens[i]);
    PyObject *result = o.failed ? PyErr_NoMemory() : PyBytes_FromStringAndSize(o.data, (Py_ssize_t)o.len);
    PyMem_Free(o.data);
    return result;
}

typedef struct {
    const char *p, *end;
} In;

static int
in_get(In *in, void *out, size_t n)
{
    if ((size_t)(in->end - in->p) < n)
        return -1;
    memcpy(out, in->p, n);
    in->p += n;
    return 0;
}

static int
in_str(In *in, Bytes *out)
{
    uint32_t n;
    if (in_get(in, &n, 4) < 0 || (size_t)(in->end - in->p) < n)
        return -1;
    out->p = in->p;
    out->n = n;
    in->p += n;
    return 0;
}

PyDoc_STRVAR(load_doc,
"load(data)\n\n"
"Fold in a table dumped by dump(), read from a *later* part of the journals:\n"
"its dispatches are later than this table's. ValueError for bad data.");

static PyObject *
Table_load(Table *t, PyObject *args)
{
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:load", &view))
        return NULL;
    In in = {view.buf, (const char *)view.buf + view.len};
    size_t *map = NULL;
    int bad = 0, nomem = 0;
    uint32_t n, count;
    char magic[4];
    if (in_get(&in, magic, 4) < 0 || memcmp(magic, "SJT1", 4) != 0 || in_get(&in, &n, 4) < 0) {
        bad = 1;
        goto out;
    }
    if ((map = PyMem_Calloc(n ? n : 1, sizeof(size_t))) == NULL) {
        nomem = 1;
        goto out;
    }
    for (uint32_t k = 0; k < n; k++) {
        Bytes key, host, span, fail;
        uint32_t flags;
        int64_t pid, proc;
        if (in_str(&in, &key) < 0 || in_get(&in, &flags, 4) < 0 || in_get(&in, &pid, 8) < 0 ||
            in_get(&in, &proc, 8) < 0) {
            bad = 1;
            goto out;
        }
        uint32_t host_len;
        if (in_get(&in, &host_len, 4) < 0) {
            bad = 1;
            goto out;
        }
        int has_host = host_len != UINT32_MAX;
        if (has_host) {
            in.p -= 4;
            if (in_str(&in, &host) < 0) {
                bad = 1;
                goto out;
            }
        }
        if (in_str(&in, &span) < 0 || in_str(&in, &fail) < 0) {
            bad = 1;
            goto out;
        }
        Entry *e = chunk_entry(t, key.p, key.n, &map[k]);
        if (e == NULL) {
            nomem = 1;
            goto out;
        }
        e->flags |= flags & F_DONE;
        if (flags & F_DISPATCHED) { /* the later dispatch is the latest */
            if (fold_dispatch_fields(t, e, span, has_host ? &host : NULL, (flags & F_HAS_PID) ? &pid : NULL,
                                     (flags & F_HAS_PROC) ? &proc : NULL) < 0) {
                nomem = 1;
                goto out;
            }
        }
        if ((flags & F_FAILED) && span_set(t, &e->fail_span, fail.p, fail.n) < 0) {
            nomem = 1;
            goto out;
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        uint32_t flag = pass == 0 ? F_DISPATCHED : F_FAILED;
        if (in_get(&in, &count, 4) < 0) {
            bad = 1;
            goto out;
        }
        for (uint32_t k = 0; k < count; k++) {
            uint32_t idx;
            if (in_get(&in, &idx, 4) < 0 || idx >= n) {
                bad = 1;
                goto out;
            }
            size_t i = map[idx];
            Entry *e = &t->entries[i];
            if (e->flags & flag)
                continue;
            if (pass == 0 ? append_index(&t->dispatch_order, &t->n_dispatch, &t->dispatch_cap, i)
                          : append_index(&t->failure_order, &t->n_failure, &t->failure_cap, i)) {
                nomem = 1;
                goto out;
            }
            e->flags |= flag;
        }
    }
    if (in_get(&in, &count, 4) < 0) {
        bad = 1;
        goto out;
    }
    for (uint32_t k = 0; k < count; k++) {
        Bytes span;
        if (in_str(&in, &span) < 0) {
            bad = 1;
            goto out;
        }
        if (st_get(&t->failed_spans, span.p, span.n, 1, NULL) < 0) {
            nomem = 1;
            goto out;
        }
    }
    bad = in.p != in.end;
out:
    PyMem_Free(map);
    PyBuffer_Release(&view);
    if (nomem)
        return PyErr_NoMemory();
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "load: not a table dumped by this build");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Table_methods[] = {
    {"feed", (PyCFunction)Table_feed, METH_VARARGS, feed_doc},
    {"dispatch", (PyCFunction)Table_dispatch, METH_VARARGS, dispatch_doc},
    {"complete", (PyCFunction)Table_complete, METH_VARARGS, complete_doc},
    {"latest_span", (PyCFunction)Table_latest_span, METH_O, latest_span_doc},
    {"summary", (PyCFunction)Table_summary, METH_NOARGS, summary_doc},
    {"dump", (PyCFunction)Table_dump, METH_NOARGS, dump_doc},
    {"load", (PyCFunction)Table_load, METH_VARARGS, load_doc},
    {"flags", (PyCFunction)Table_flags, METH_O, flags_doc},
    {"ids", (PyCFunction)Table_ids, METH_O, ids_doc},
    {"counts", (PyCFunction)Table_counts, METH_NOARGS, counts_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(block_lines_doc,
"block_lines(block, start, end) -> (lines, whole)\n\n"
"How many newline-terminated lines ``block[start:end]`` holds, and whether\n"
"each of them starts with '{' and ends with '}' (the pure-Python reader's\n"
"check before it trusts a count of decoded events). One pass.");

static PyObject *
block_lines(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "y*nn:block_lines", &view, &start, &stop))
        return NULL;
    if (start < 0 || stop > view.len || start > stop) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "block_lines: start and end must be offsets into the block");
        return NULL;
    }
    const char *p = (const char *)view.buf + start, *end = (const char *)view.buf + stop;
    Py_ssize_t lines = 0;
    int whole = 1;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        lines++;
        if (nl == p || *p != '{' || nl[-1] != '}')
            whole = 0;
        p = nl + 1;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nO)", lines, whole ? Py_True : Py_False);
}

static PyMethodDef module_methods[] = {
    {"block_lines", block_lines, METH_VARARGS, block_lines_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "spanjournal._speedups.Table",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)Table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The states-only fold of journal lines (see the module's source).",
    .tp_methods = Table_methods,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "spanjournal._speedups",
    .m_doc = "The states-only fold of journal lines, in C (optional; the reader falls back to Python).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&TableType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddIntConstant(m, "DISPATCHED", F_DISPATCHED) < 0 || PyModule_AddIntConstant(m, "DONE", F_DONE) < 0 ||
        PyModule_AddIntConstant(m, "FAILED", F_FAILED) < 0 ||
        PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
