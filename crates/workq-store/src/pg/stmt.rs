//! Statements by SQL text, prepared once per connection, and column reads that fail as errors.

use postgres::types::{FromSql, ToSql};
use postgres::{GenericClient, Row, Statement};

use crate::StoreError;

/// Query parameters.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Prepared statements of the current connection, by SQL text: each statement is parsed by
/// the server once per connection instead of on every call (a round trip each).
pub(crate) type Cache = std::cell::RefCell<std::collections::HashMap<String, Statement>>;

/// The statement for `sql`, prepared on first use.
pub(crate) fn prep<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
) -> Result<Statement, postgres::Error> {
    if let Some(st) = cache.borrow().get(sql) {
        return Ok(st.clone());
    }
    let st = c.prepare(sql)?;
    let mut m = cache.borrow_mut();
    if m.len() > 256 {
        m.clear();
    }
    m.insert(sql.to_string(), st.clone());
    Ok(st)
}

/// Runs a statement; returns the rows it changed.
pub(crate) fn ex<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> Result<u64, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.execute(&st, p)
}

/// Runs a query; returns every row.
pub(crate) fn qy<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> Result<Vec<Row>, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.query(&st, p)
}

/// Runs a query that returns at most one row.
pub(crate) fn qo<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> Result<Option<Row>, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.query_opt(&st, p)
}

/// Runs a query that returns exactly one row.
pub(crate) fn q1<C: GenericClient>(
    cache: &Cache,
    c: &mut C,
    sql: &str,
    p: Params<'_>,
) -> Result<Row, postgres::Error> {
    let st = prep(cache, c, sql)?;
    c.query_one(&st, p)
}

/// Typed column reads. `Row::get` panics on a NULL or a type mismatch, and with
/// `panic = "abort"` one row written by hand or by another program would kill a worker and
/// every job it runs; these return a [`StoreError::BadRow`] naming the table and column instead.
pub(crate) trait Cols {
    /// Column `idx` of a row from `table`.
    fn col<'a, T: FromSql<'a>>(&'a self, table: &'static str, idx: usize) -> Result<T, StoreError>;
}

impl Cols for Row {
    fn col<'a, T: FromSql<'a>>(&'a self, table: &'static str, idx: usize) -> Result<T, StoreError> {
        self.try_get(idx).map_err(|e| bad_row(self, table, idx, &e))
    }
}

/// The error for column `idx` of `r` that could not be read.
fn bad_row(r: &Row, table: &'static str, idx: usize, e: &postgres::Error) -> StoreError {
    let column = r
        .columns()
        .get(idx)
        .map_or_else(|| format!("column {idx}"), |c| c.name().to_string());
    let id = r
        .columns()
        .iter()
        .position(|c| c.name() == "id" || c.name() == "job_id")
        .and_then(|i| r.try_get::<_, i64>(i).ok())
        .map_or_else(|| "?".to_string(), |v| v.to_string());
    let source = std::error::Error::source(e);
    let detail = if source.is_some_and(|s| s.is::<postgres::types::WasNull>()) {
        "it is NULL".to_string()
    } else {
        source.map_or_else(|| e.to_string(), ToString::to_string)
    };
    StoreError::BadRow {
        table,
        id,
        column,
        detail,
    }
}
