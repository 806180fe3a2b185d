#include "coordinator/job_db.h"

#include <sqlite3.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "coordinator/worker_registry.h"

namespace dgptq::coordinator {
namespace {

constexpr int kApplicationId = 0x44475051;  // "DGPQ"
constexpr int kSchemaVersion = 1;
constexpr int kBusyTimeoutMs = 5000;

// Schema version 1. request_id is unique among the jobs that have one (SubmitJob dedup).
constexpr char kSchema[] = R"sql(
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE jobs (
  seq INTEGER PRIMARY KEY,
  job_id TEXT NOT NULL UNIQUE,
  request_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  job BLOB NOT NULL);
CREATE UNIQUE INDEX jobs_by_request_id ON jobs (request_id) WHERE request_id <> '';
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE TABLE events (
  job_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  event BLOB NOT NULL,
  PRIMARY KEY (job_id, idx)) WITHOUT ROWID;
)sql";

// A prepared statement, finalized on scope exit.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

void BindBlob(sqlite3_stmt* s, int i, const std::string& bytes) {
  sqlite3_bind_blob(s, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
}

void BindText(sqlite3_stmt* s, int i, const std::string& text) {
  sqlite3_bind_text(s, i, text.data(), static_cast<int>(text.size()), SQLITE_STATIC);
}

std::string ColumnBytes(sqlite3_stmt* s, int i) {
  const void* p = sqlite3_column_blob(s, i);
  return p == nullptr ? std::string()
                      : std::string(static_cast<const char*>(p), sqlite3_column_bytes(s, i));
}

}  // namespace

absl::StatusOr<std::unique_ptr<JobDb>> JobDb::Open(const std::string& state_dir,
                                                   Contents* contents) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create the state directory '", state_dir, "': ", ec.message()));
  }
  std::unique_ptr<JobDb> db(new JobDb((std::filesystem::path(state_dir) / "jobs.db").string()));
  if (sqlite3_open_v2(db->path_.c_str(), &db->db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                      nullptr) != SQLITE_OK) {
    return db->Error("cannot open");
  }
  sqlite3_busy_timeout(db->db_, kBusyTimeoutMs);
  DGPTQ_RETURN_IF_ERROR(db->Exec("PRAGMA locking_mode = EXCLUSIVE", "setting the locking mode"));
  // The lock first (held from here on in exclusive mode), then the checks: nothing is written
  // to a file that is not ours.
  DGPTQ_RETURN_IF_ERROR(db->Exec("BEGIN IMMEDIATE", "locking"));
  absl::Status s = db->CheckOurs();
  if (s.ok()) s = db->Exec("COMMIT", "creating the schema");
  if (!s.ok()) {
    sqlite3_exec(db->db_, "ROLLBACK", nullptr, nullptr, nullptr);
    return s;
  }
  DGPTQ_RETURN_IF_ERROR(db->Setup());
  DGPTQ_RETURN_IF_ERROR(db->Load(contents));
  DGPTQ_RETURN_IF_ERROR(db->Prepare(
      "INSERT OR REPLACE INTO jobs (seq, job_id, request_id, state, job) VALUES (?, ?, ?, ?, ?)",
      &db->put_job_, "preparing writes"));
  DGPTQ_RETURN_IF_ERROR(
      db->Prepare("INSERT OR REPLACE INTO events (job_id, idx, event) VALUES (?, ?, ?)",
                  &db->put_event_, "preparing writes"));
  return db;
}

JobDb::~JobDb() {
  sqlite3_finalize(put_job_);
  sqlite3_finalize(put_event_);
  sqlite3_close_v2(db_);
}

absl::Status JobDb::Error(const std::string& what) const {
  const int rc = db_ == nullptr ? SQLITE_NOMEM : sqlite3_errcode(db_);
  const std::string msg =
      absl::StrCat(path_, ": ", what, ": ", db_ == nullptr ? "out of memory" : sqlite3_errmsg(db_));
  switch (rc & 0xff) {
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(msg);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(
          absl::StrCat(msg, " (is another dgptq-coordinator using this state directory?)"));
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(msg);
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_READONLY:
    case SQLITE_AUTH:
      return absl::FailedPreconditionError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status JobDb::Exec(const char* sql, const std::string& what) {
  return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK ? absl::OkStatus()
                                                                        : Error(what);
}

absl::Status JobDb::Prepare(const char* sql, sqlite3_stmt** stmt, const std::string& what) {
  return sqlite3_prepare_v2(db_, sql, -1, stmt, nullptr) == SQLITE_OK ? absl::OkStatus()
                                                                      : Error(what);
}

// Inside the opening transaction: an empty file gets the schema and a tag; anything else
// must carry our application id and schema version.
absl::Status JobDb::CheckOurs() {
  Stmt st;
  DGPTQ_RETURN_IF_ERROR(Prepare(
      "SELECT (SELECT application_id FROM pragma_application_id), "
      "(SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)",
      &st.s, "reading the header"));
  if (sqlite3_step(st.s) != SQLITE_ROW) return Error("reading the header");
  const int app = sqlite3_column_int(st.s, 0), version = sqlite3_column_int(st.s, 1),
            objects = sqlite3_column_int(st.s, 2);
  if (app == 0 && version == 0 && objects == 0) {
    DGPTQ_RETURN_IF_ERROR(Exec(kSchema, "creating the schema"));
    DGPTQ_RETURN_IF_ERROR(
        Exec(absl::StrFormat("PRAGMA application_id = %d; PRAGMA user_version = %d", kApplicationId,
                             kSchemaVersion)
                 .c_str(),
             "creating the schema"));
    Stmt tag;
    DGPTQ_RETURN_IF_ERROR(
        Prepare("INSERT INTO meta (key, value) VALUES ('tag', ?)", &tag.s, "creating the schema"));
    const std::string t = InstanceTag();
    BindText(tag.s, 1, t);
    if (sqlite3_step(tag.s) != SQLITE_DONE) return Error("creating the schema");
    return absl::OkStatus();
  }
  if (app != kApplicationId) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is not a dgptq job database (SQLite application_id 0x%08x, %d schema objects); "
        "left as it is: move it away or choose another --state-dir",
        path_, app, objects));
  }
  if (version != kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "%s is a dgptq job database of schema version %d; this coordinator reads version %d "
        "only (was it written by another dgptq release?); left as it is",
        path_, version, kSchemaVersion));
  }
  return absl::OkStatus();
}

// WAL and fsync on commit (job_db.h says why), then an integrity check of every page.
absl::Status JobDb::Setup() {
  Stmt mode;
  DGPTQ_RETURN_IF_ERROR(Prepare("PRAGMA journal_mode = WAL", &mode.s, "setting WAL mode"));
  if (sqlite3_step(mode.s) != SQLITE_ROW) return Error("setting WAL mode");
  const std::string m = reinterpret_cast<const char*>(sqlite3_column_text(mode.s, 0));
  if (m != "wal") {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": the file system does not support WAL mode (journal mode ", m, ")"));
  }
  DGPTQ_RETURN_IF_ERROR(Exec("PRAGMA synchronous = FULL", "setting synchronous"));
  Stmt check;
  DGPTQ_RETURN_IF_ERROR(Prepare("PRAGMA quick_check", &check.s, "checking integrity"));
  if (sqlite3_step(check.s) != SQLITE_ROW) return Error("checking integrity");
  const std::string result = reinterpret_cast<const char*>(sqlite3_column_text(check.s, 0));
  if (result != "ok") {
    return absl::DataLossError(absl::StrCat(path_, " is corrupt (quick_check: ", result, ")"));
  }
  return absl::OkStatus();
}

absl::Status JobDb::Load(Contents* contents) {
  const auto corrupt = [&](const std::string& what) {
    return absl::DataLossError(absl::StrCat(path_, " is inconsistent: ", what));
  };
  Stmt tag, jobs, events;
  DGPTQ_RETURN_IF_ERROR(
      Prepare("SELECT value FROM meta WHERE key = 'tag'", &tag.s, "reading the tag"));
  if (sqlite3_step(tag.s) != SQLITE_ROW) return corrupt("no tag in table meta");
  contents->tag = reinterpret_cast<const char*>(sqlite3_column_text(tag.s, 0));
  DGPTQ_RETURN_IF_ERROR(
      Prepare("SELECT seq, job_id, job FROM jobs ORDER BY seq", &jobs.s, "reading the jobs"));
  DGPTQ_RETURN_IF_ERROR(Prepare("SELECT idx, event FROM events WHERE job_id = ? ORDER BY idx",
                                &events.s, "reading the events"));
  int rc;
  while ((rc = sqlite3_step(jobs.s)) == SQLITE_ROW) {
    StoredJob j;
    j.seq = sqlite3_column_int64(jobs.s, 0);
    const std::string id = ColumnBytes(jobs.s, 1);
    if (j.seq != static_cast<int64_t>(contents->jobs.size()) + 1) {
      return corrupt(
          absl::StrCat("job ", id, " has seq ", j.seq, " after ", contents->jobs.size(), " jobs"));
    }
    if (!j.job.ParseFromString(ColumnBytes(jobs.s, 2)) || j.job.job_id() != id) {
      return corrupt(absl::StrCat("the record of job ", id, " does not parse"));
    }
    sqlite3_reset(events.s);
    BindText(events.s, 1, id);
    while ((rc = sqlite3_step(events.s)) == SQLITE_ROW) {
      v1::JobEvent& e = j.events.emplace_back();
      if (sqlite3_column_int64(events.s, 0) != static_cast<int64_t>(j.events.size()) - 1 ||
          !e.ParseFromString(ColumnBytes(events.s, 1))) {
        return corrupt(absl::StrCat("event ", j.events.size() - 1, " of job ", id,
                                    " is missing or does not parse"));
      }
    }
    if (rc != SQLITE_DONE) return Error(absl::StrCat("reading the events of job ", id));
    if (static_cast<int64_t>(j.events.size()) != j.job.event_count()) {
      return corrupt(absl::StrCat("job ", id, " has ", j.events.size(), " events, its record ",
                                  j.job.event_count()));
    }
    contents->jobs.push_back(std::move(j));
  }
  return rc == SQLITE_DONE ? absl::OkStatus() : Error("reading the jobs");
}

absl::Status JobDb::Put(int64_t seq, const v1::Job& job, std::span<const v1::JobEvent> events) {
  DGPTQ_RETURN_IF_ERROR(Exec("BEGIN IMMEDIATE", "saving job " + job.job_id()));
  absl::Status s = PutRows(seq, job, events);
  if (s.ok()) s = Exec("COMMIT", "saving job " + job.job_id());
  if (!s.ok()) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  return s;
}

absl::Status JobDb::PutRows(int64_t seq, const v1::Job& job, std::span<const v1::JobEvent> events) {
  const auto step = [&](sqlite3_stmt* s) {
    const absl::Status st = sqlite3_step(s) == SQLITE_DONE
                                ? absl::OkStatus()
                                : Error(absl::StrCat("saving job ", job.job_id()));
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return st;
  };
  const std::string bytes = job.SerializeAsString();
  sqlite3_bind_int64(put_job_, 1, seq);
  BindText(put_job_, 2, job.job_id());
  BindText(put_job_, 3, job.request_id());
  sqlite3_bind_int(put_job_, 4, job.state());
  BindBlob(put_job_, 5, bytes);
  DGPTQ_RETURN_IF_ERROR(step(put_job_));
  for (const v1::JobEvent& e : events) {
    const std::string event = e.SerializeAsString();
    BindText(put_event_, 1, job.job_id());
    sqlite3_bind_int64(put_event_, 2, e.index());
    BindBlob(put_event_, 3, event);
    DGPTQ_RETURN_IF_ERROR(step(put_event_));
  }
  return absl::OkStatus();
}

}  // namespace dgptq::coordinator
