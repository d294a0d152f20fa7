/*
 * geodr's statement deadline, a SQLite loadable extension.
 *
 * better-sqlite3 runs statements on the JavaScript thread and exposes no way to
 * stop one (its SQLite is built without progress callbacks, and it does not wrap
 * sqlite3_interrupt). A statement that does a lot of work between two result rows
 * (an aggregate over a huge recursive CTE, say) would hold the event loop, and
 * every other tenant of the server, far past its deadline. Loaded into a
 * connection, this extension arms a watchdog thread that calls sqlite3_interrupt()
 * on the connection once its deadline passes; the statement then fails with
 * SQLITE_INTERRUPT and SQLite undoes what it had done.
 *
 *   select __geodr_deadline(500)   -- interrupt this connection 500 ms from now
 *   select __geodr_deadline(0)     -- disarm
 *
 * The function is DIRECTONLY (no triggers or views), and the server's SQL guard
 * refuses every `__geodr_` identifier in tenant SQL, so a tenant cannot lift it.
 */
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1
#include <pthread.h>
#include <time.h>

typedef struct Deadline Deadline;
struct Deadline {
  sqlite3 *db;
  struct timespec at; /* CLOCK_MONOTONIC */
  int armed;
  Deadline *next; /* in the armed list */
};

/* One watchdog for the process; the armed list is short (one entry per running statement). */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed;
static int started = 0;
static Deadline *armed = 0;

/* How often an expired deadline interrupts again until it is disarmed. */
#define REPEAT_MS 5

static struct timespec later(struct timespec t, sqlite3_int64 ms) {
  t.tv_sec += (time_t)(ms / 1000);
  t.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (t.tv_nsec >= 1000000000L) {
    t.tv_sec += 1;
    t.tv_nsec -= 1000000000L;
  }
  return t;
}

static int before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Caller holds the lock. */
static void unlink_deadline(Deadline *d) {
  for (Deadline **p = &armed; *p != 0; p = &(*p)->next) {
    if (*p == d) {
      *p = d->next;
      break;
    }
  }
  d->next = 0;
  d->armed = 0;
}

static void *watch(void *unused) {
  (void)unused;
  pthread_mutex_lock(&lock);
  for (;;) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    Deadline *first = 0;
    for (Deadline *d = armed; d != 0; d = d->next) {
      if (!before(&now, &d->at)) {
        /* Under the lock, so the connection cannot be closed meanwhile (see destroy).
           SQLite drops an interrupt that lands while no statement runs (between the
           arming statement and the one it guards, say), so it is repeated until the
           caller disarms. */
        sqlite3_interrupt(d->db);
        d->at = later(now, REPEAT_MS);
      }
      if (first == 0 || before(&d->at, &first->at)) first = d;
    }
    if (first == 0) {
      pthread_cond_wait(&changed, &lock);
    } else {
      struct timespec until = first->at;
      pthread_cond_timedwait(&changed, &lock, &until);
    }
  }
  return 0;
}

static int start_watchdog(void) {
  if (started) return SQLITE_OK;
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&changed, &attr);
  pthread_condattr_destroy(&attr);
  pthread_t thread;
  if (pthread_create(&thread, 0, watch, 0) != 0) return SQLITE_ERROR;
  pthread_detach(thread);
  started = 1;
  return SQLITE_OK;
}

static void set_deadline(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Deadline *d = (Deadline *)sqlite3_user_data(ctx);
  sqlite3_int64 ms = argc == 1 ? sqlite3_value_int64(argv[0]) : 0;
  if (ms < 0) ms = 0;
  pthread_mutex_lock(&lock);
  if (d->armed) unlink_deadline(d);
  if (ms > 0) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    d->at = later(now, ms);
    d->armed = 1;
    d->next = armed;
    armed = d;
    pthread_cond_signal(&changed);
  }
  pthread_mutex_unlock(&lock);
  sqlite3_result_int64(ctx, ms);
}

/* Called by SQLite when the connection closes: after this the watchdog never sees it. */
static void destroy(void *p) {
  Deadline *d = (Deadline *)p;
  pthread_mutex_lock(&lock);
  if (d->armed) unlink_deadline(d);
  pthread_mutex_unlock(&lock);
  sqlite3_free(d);
}

int sqlite3_geodrdeadline_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  (void)err;
  SQLITE_EXTENSION_INIT2(api);
  pthread_mutex_lock(&lock);
  int rc = start_watchdog();
  pthread_mutex_unlock(&lock);
  if (rc != SQLITE_OK) return rc;
  Deadline *d = (Deadline *)sqlite3_malloc(sizeof(Deadline));
  if (d == 0) return SQLITE_NOMEM;
  d->db = db;
  d->armed = 0;
  d->next = 0;
  /* The function owns the state: SQLite calls destroy when the connection closes. */
  return sqlite3_create_function_v2(db, "__geodr_deadline", 1, SQLITE_UTF8 | SQLITE_DIRECTONLY, d, set_deadline, 0, 0, destroy);
}
