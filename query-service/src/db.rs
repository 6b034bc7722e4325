//! Every SQL statement of query-service: loading and upserting read-model rows (for the
//! live tables or a rebuild's shadow tables), checkpoints, and the queries the API serves.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain_events::status::{OrderStatus, PaymentStatus, StockStatus};
use event_store::Position;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row, postgres::PgRow, types::Json};
use uuid::Uuid;

use crate::model::{CustomerView, LineView, OrderView, ProductView};

/// A set of read-model tables: the live ones, or a rebuild's shadow copies. Names are fixed
/// strings from this file, never input, which is what makes the formatted SQL safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    /// Orders.
    pub orders: &'static str,
    /// Products.
    pub products: &'static str,
    /// Customer summaries.
    pub customers: &'static str,
}

/// The tables queries read.
pub const LIVE: Tables = Tables {
    orders: "read_orders",
    products: "read_products",
    customers: "read_customers",
};

/// Where a rebuild writes until it swaps.
pub const SHADOW: Tables = Tables {
    orders: "rebuild_orders",
    products: "rebuild_products",
    customers: "rebuild_customers",
};

const ORDER_COLUMNS: &str = "order_id, customer_id, status, currency, lines, total_minor, payment_method, \
     stock_status, payment_status, cancellation_reason, created_at, updated_at, version";
const PRODUCT_COLUMNS: &str =
    "sku, name, price_minor, currency, on_hand, reserved, version, updated_at";
const CUSTOMER_COLUMNS: &str =
    "customer_id, order_count, confirmed_count, spent, last_order_id, last_order_at";

/// A status column, by its name (migration 0012 checks the column holds one).
fn named<T>(row: &PgRow, column: &str, parse: fn(&str) -> Option<T>) -> Result<T, sqlx::Error> {
    let text: &str = row.try_get(column)?;
    parse(text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: format!("unknown value {text:?}").into(),
    })
}

fn order_from_row(row: &PgRow) -> Result<OrderView, sqlx::Error> {
    let lines: sqlx::types::Json<Vec<LineView>> = row.try_get("lines")?;
    Ok(OrderView {
        order_id: row.try_get("order_id")?,
        customer_id: row.try_get("customer_id")?,
        status: named(row, "status", OrderStatus::parse)?,
        currency: row.try_get("currency")?,
        lines: lines.0,
        total_minor: row.try_get("total_minor")?,
        payment_method: row.try_get("payment_method")?,
        stock_status: named(row, "stock_status", StockStatus::parse)?,
        payment_status: named(row, "payment_status", PaymentStatus::parse)?,
        cancellation_reason: row.try_get("cancellation_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn product_from_row(row: &PgRow) -> Result<ProductView, sqlx::Error> {
    Ok(ProductView {
        sku: row.try_get("sku")?,
        name: row.try_get("name")?,
        price_minor: row.try_get("price_minor")?,
        currency: row.try_get("currency")?,
        on_hand: row.try_get("on_hand")?,
        reserved: row.try_get("reserved")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn customer_from_row(row: &PgRow) -> Result<CustomerView, sqlx::Error> {
    let spent: sqlx::types::Json<BTreeMap<String, i64>> = row.try_get("spent")?;
    Ok(CustomerView {
        customer_id: row.try_get("customer_id")?,
        order_count: row.try_get("order_count")?,
        confirmed_count: row.try_get("confirmed_count")?,
        spent: spent.0,
        last_order_id: row.try_get("last_order_id")?,
        last_order_at: row.try_get("last_order_at")?,
    })
}

/// The rows of the orders with these ids.
async fn order_rows<'e>(
    db: impl sqlx::PgExecutor<'e>,
    t: Tables,
    ids: &[Uuid],
) -> Result<Vec<PgRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM {} WHERE order_id = ANY($1)",
        t.orders
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(db)
        .await
}

/// Loads the orders with these ids (for the projector: a row that cannot be read fails
/// the batch).
pub async fn load_orders(
    conn: &mut PgConnection,
    t: Tables,
    ids: &[Uuid],
) -> Result<Vec<OrderView>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    order_rows(conn, t, ids)
        .await?
        .iter()
        .map(order_from_row)
        .collect()
}

/// One row of [`read_orders`]: the order's id and its view, or why the row cannot be read.
pub type OrderRow = (Uuid, Result<OrderView, sqlx::Error>);

/// The orders with these ids from the live table, each decoded on its own: a row that
/// cannot be read fails its own order, not the others read with it.
pub async fn read_orders(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<OrderRow>, sqlx::Error> {
    order_rows(conn, LIVE, ids)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("order_id")?, order_from_row(row))))
        .collect()
}

/// Loads the products with these SKUs.
pub async fn load_products(
    conn: &mut PgConnection,
    t: Tables,
    skus: &[String],
) -> Result<Vec<ProductView>, sqlx::Error> {
    if skus.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM {} WHERE sku = ANY($1)",
        t.products
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(skus)
        .fetch_all(conn)
        .await?
        .iter()
        .map(product_from_row)
        .collect()
}

/// Loads the customers with these ids.
pub async fn load_customers(
    conn: &mut PgConnection,
    t: Tables,
    ids: &[Uuid],
) -> Result<Vec<CustomerView>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {CUSTOMER_COLUMNS} FROM {} WHERE customer_id = ANY($1)",
        t.customers
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(ids)
        .fetch_all(conn)
        .await?
        .iter()
        .map(customer_from_row)
        .collect()
}

/// One batch's changes to the read models, and the checkpoint move that covers them.
#[derive(Debug)]
pub struct BatchWrite<'a> {
    /// The projection whose checkpoint moves.
    pub projection: &'a str,
    /// Where the checkpoint must be now.
    pub from: Position,
    /// Where it moves to.
    pub to: Position,
    /// Events folded in.
    pub applied: i64,
    /// Events of unknown types skipped.
    pub skipped: i64,
    /// Orders to insert or replace.
    pub orders: &'a [&'a OrderView],
    /// Products to insert or replace.
    pub products: &'a [&'a ProductView],
    /// Customer summaries to insert or replace.
    pub customers: &'a [&'a CustomerView],
    /// The tables' generation the batch was folded for, when it must still be the stored
    /// one (the live projector's, whose in-memory views belong to one generation).
    pub generation: Option<i64>,
}

/// Writes a batch in one statement: the checkpoint moves from `from` to `to` (compare and
/// set) and, only if it did, the rows are inserted or replaced. One statement is one
/// transaction and one round trip. False when the checkpoint was not at `from`, or not of
/// the batch's generation when it names one (nothing is written).
pub async fn write_batch(
    conn: &mut PgConnection,
    t: Tables,
    batch: &BatchWrite<'_>,
) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "WITH moved AS ( \
           UPDATE projection_checkpoints SET transaction_id = $4, global_position = $5, \
             events_applied = events_applied + $6, unknown_skipped = unknown_skipped + $7, updated_at = now() \
           WHERE projection = $1 AND transaction_id = $2 AND global_position = $3 \
             AND ($35::bigint IS NULL OR generation = $35) \
           RETURNING 1 \
         ), orders AS ( \
           INSERT INTO {orders} ({ORDER_COLUMNS}) \
           SELECT * FROM unnest($8::uuid[], $9::uuid[], $10::text[], $11::text[], $12::jsonb[], $13::bigint[], \
                                $14::text[], $15::text[], $16::text[], $17::text[], $18::timestamptz[], \
                                $19::timestamptz[], $20::bigint[]) \
           WHERE EXISTS (SELECT 1 FROM moved) \
           ON CONFLICT (order_id) DO UPDATE SET customer_id = excluded.customer_id, status = excluded.status, \
             currency = excluded.currency, lines = excluded.lines, total_minor = excluded.total_minor, \
             payment_method = excluded.payment_method, stock_status = excluded.stock_status, \
             payment_status = excluded.payment_status, cancellation_reason = excluded.cancellation_reason, \
             created_at = excluded.created_at, updated_at = excluded.updated_at, version = excluded.version \
         ), products AS ( \
           INSERT INTO {products} ({PRODUCT_COLUMNS}) \
           SELECT * FROM unnest($21::text[], $22::text[], $23::bigint[], $24::text[], $25::bigint[], $26::bigint[], \
                                $27::bigint[], $28::timestamptz[]) \
           WHERE EXISTS (SELECT 1 FROM moved) \
           ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price_minor = excluded.price_minor, \
             currency = excluded.currency, on_hand = excluded.on_hand, reserved = excluded.reserved, \
             version = excluded.version, updated_at = excluded.updated_at \
         ), customers AS ( \
           INSERT INTO {customers} ({CUSTOMER_COLUMNS}) \
           SELECT * FROM unnest($29::uuid[], $30::bigint[], $31::bigint[], $32::jsonb[], $33::uuid[], \
                                $34::timestamptz[]) \
           WHERE EXISTS (SELECT 1 FROM moved) \
           ON CONFLICT (customer_id) DO UPDATE SET order_count = excluded.order_count, \
             confirmed_count = excluded.confirmed_count, spent = excluded.spent, \
             last_order_id = excluded.last_order_id, last_order_at = excluded.last_order_at \
         ) \
         SELECT count(*) FROM moved",
        orders = t.orders,
        products = t.products,
        customers = t.customers,
    );
    let (orders, products, customers) = (batch.orders, batch.products, batch.customers);
    let moved: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(batch.projection)
        .bind(batch.from.to_columns().0)
        .bind(batch.from.to_columns().1)
        .bind(batch.to.to_columns().0)
        .bind(batch.to.to_columns().1)
        .bind(batch.applied)
        .bind(batch.skipped)
        .bind(orders.iter().map(|o| o.order_id).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.customer_id).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.status.as_str()).collect::<Vec<_>>())
        .bind(
            orders
                .iter()
                .map(|o| o.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(orders.iter().map(|o| Json(&o.lines)).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.total_minor).collect::<Vec<_>>())
        .bind(
            orders
                .iter()
                .map(|o| o.payment_method.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|o| o.stock_status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|o| o.payment_status.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            orders
                .iter()
                .map(|o| o.cancellation_reason.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(orders.iter().map(|o| o.created_at).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.updated_at).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.version).collect::<Vec<_>>())
        .bind(products.iter().map(|p| p.sku.as_str()).collect::<Vec<_>>())
        .bind(products.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
        .bind(products.iter().map(|p| p.price_minor).collect::<Vec<_>>())
        .bind(
            products
                .iter()
                .map(|p| p.currency.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(products.iter().map(|p| p.on_hand).collect::<Vec<_>>())
        .bind(products.iter().map(|p| p.reserved).collect::<Vec<_>>())
        .bind(products.iter().map(|p| p.version).collect::<Vec<_>>())
        .bind(products.iter().map(|p| p.updated_at).collect::<Vec<_>>())
        .bind(customers.iter().map(|c| c.customer_id).collect::<Vec<_>>())
        .bind(customers.iter().map(|c| c.order_count).collect::<Vec<_>>())
        .bind(
            customers
                .iter()
                .map(|c| c.confirmed_count)
                .collect::<Vec<_>>(),
        )
        .bind(customers.iter().map(|c| Json(&c.spent)).collect::<Vec<_>>())
        .bind(
            customers
                .iter()
                .map(|c| c.last_order_id)
                .collect::<Vec<_>>(),
        )
        .bind(
            customers
                .iter()
                .map(|c| c.last_order_at)
                .collect::<Vec<_>>(),
        )
        .bind(batch.generation)
        .fetch_one(conn)
        .await?;
    Ok(moved == 1)
}

/// A projection's stored progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The projection's name.
    pub projection: String,
    /// The last event applied.
    pub position: Position,
    /// Events applied so far.
    pub events_applied: i64,
    /// Events of unknown types skipped so far.
    pub unknown_skipped: i64,
    /// running, rebuilding or stopped.
    pub state: String,
    /// Why it stopped, if it did.
    pub last_error: Option<String>,
    /// The event types it reads; `None`: every type.
    pub event_types: Option<Vec<String>>,
    /// Which generation of the tables it covers: a rebuild's swap bumps it.
    pub generation: i64,
}

/// A position from its two columns; a negative one is a corrupt row.
fn position(tx: i64, pos: i64) -> Result<Position, sqlx::Error> {
    Position::from_columns(tx, pos).map_err(|err| sqlx::Error::Decode(err.into()))
}

fn checkpoint_from_row(row: &PgRow) -> Result<Checkpoint, sqlx::Error> {
    let tx: i64 = row.try_get("transaction_id")?;
    let pos: i64 = row.try_get("global_position")?;
    Ok(Checkpoint {
        projection: row.try_get("projection")?,
        position: position(tx, pos)?,
        events_applied: row.try_get("events_applied")?,
        unknown_skipped: row.try_get("unknown_skipped")?,
        state: row.try_get("state")?,
        last_error: row.try_get("last_error")?,
        event_types: row.try_get("event_types")?,
        generation: row.try_get("generation")?,
    })
}

const CHECKPOINT_COLUMNS: &str = "projection, transaction_id, global_position, events_applied, unknown_skipped, state, last_error, event_types, generation";

/// A projection's checkpoint, created at the start of the log if missing.
pub async fn checkpoint(
    conn: &mut PgConnection,
    projection: &str,
    state: &str,
) -> Result<Checkpoint, sqlx::Error> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (projection, transaction_id, global_position, state) \
         VALUES ($1, 0, 0, $2) ON CONFLICT (projection) DO NOTHING",
    )
    .bind(projection)
    .bind(state)
    .execute(&mut *conn)
    .await?;
    let sql =
        format!("SELECT {CHECKPOINT_COLUMNS} FROM projection_checkpoints WHERE projection = $1");
    checkpoint_from_row(
        &sqlx::query(AssertSqlSafe(sql))
            .bind(projection)
            .fetch_one(conn)
            .await?,
    )
}

/// Every projection's checkpoint.
pub async fn checkpoints(pool: &PgPool) -> Result<Vec<Checkpoint>, sqlx::Error> {
    let sql =
        format!("SELECT {CHECKPOINT_COLUMNS} FROM projection_checkpoints ORDER BY projection");
    sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await?
        .iter()
        .map(checkpoint_from_row)
        .collect()
}

/// The position a projection has reached, as stored.
pub async fn stored_position(
    pool: &PgPool,
    projection: &str,
) -> Result<Option<Position>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    Ok(stored_mark_on(&mut conn, projection)
        .await?
        .map(|(position, _)| position))
}

/// The position a projection has reached and the tables' generation it covers (see
/// [`Checkpoint::generation`]), as stored, on a connection of the caller's.
pub async fn stored_mark_on(
    conn: &mut PgConnection,
    projection: &str,
) -> Result<Option<(Position, i64)>, sqlx::Error> {
    let row: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, global_position, generation FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_optional(conn)
    .await?;
    row.map(|(tx, pos, generation)| Ok((position(tx, pos)?, generation)))
        .transpose()
}

/// Records a projection's state (and error), outside any batch.
pub async fn set_state(
    pool: &PgPool,
    projection: &str,
    state: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projection_checkpoints SET state = $2, last_error = $3, updated_at = now() WHERE projection = $1")
        .bind(projection)
        .bind(state)
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Takes the projection's leadership lock on this session, if free.
pub async fn try_lead(conn: &mut PgConnection, projection: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('projection:' || $1))")
        .bind(projection)
        .fetch_one(conn)
        .await
}

/// The events after `after` (of `types`, or of every type) that the log can hand out now,
/// and the time the oldest of them happened.
pub async fn lag(
    pool: &PgPool,
    after: Position,
    types: Option<&[String]>,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), min(occurred_at) FROM events \
         WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
           AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
           AND ($3::text[] IS NULL OR event_type = ANY($3))",
    )
    .bind(after.transaction_id.to_string())
    .bind(i64::try_from(after.global_position).unwrap_or(i64::MAX))
    .bind(types)
    .fetch_one(pool)
    .await
}

/// Events already committed that no reader may see yet, because a transaction older than
/// theirs is still open (the log's horizon is behind its head), and when the oldest of
/// them happened.
pub async fn held_back(pool: &PgPool) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), min(occurred_at) FROM events \
         WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())",
    )
    .fetch_one(pool)
    .await
}

/// The global position of the last event at or before `position` (0 before the first):
/// a number a person can compare, where a position may point past an event.
pub async fn event_at_or_before(pool: &PgPool, position: Position) -> Result<i64, sqlx::Error> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT global_position FROM events \
         WHERE (transaction_id, global_position) <= ($1::text::xid8, $2) \
         ORDER BY transaction_id DESC, global_position DESC LIMIT 1",
    )
    .bind(position.transaction_id.to_string())
    .bind(i64::try_from(position.global_position).unwrap_or(i64::MAX))
    .fetch_optional(pool)
    .await?;
    Ok(found.unwrap_or(0))
}

/// Where a page of orders starts: after this (created_at, order_id), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrderCursor {
    /// The last order's creation time.
    pub created_at: DateTime<Utc>,
    /// The last order's id.
    pub order_id: Uuid,
}

/// A page of orders, newest first, filtered by customer and status when given.
pub async fn list_orders(
    pool: &PgPool,
    customer: Option<Uuid>,
    status: Option<OrderStatus>,
    after: Option<OrderCursor>,
    limit: i64,
) -> Result<Vec<OrderView>, sqlx::Error> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM read_orders \
         WHERE ($1::uuid IS NULL OR customer_id = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::timestamptz IS NULL OR (created_at, order_id) < ($3, $4)) \
         ORDER BY created_at DESC, order_id DESC LIMIT $5"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(customer)
        .bind(status.map(OrderStatus::as_str))
        .bind(after.map(|c| c.created_at))
        .bind(after.map(|c| c.order_id))
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(order_from_row)
        .collect()
}

/// One product.
pub async fn get_product(pool: &PgPool, sku: &str) -> Result<Option<ProductView>, sqlx::Error> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM read_products WHERE sku = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(sku)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(product_from_row)
        .transpose()
}

/// A page of products in SKU order, after `after` when given.
pub async fn list_products(
    pool: &PgPool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ProductView>, sqlx::Error> {
    let sql = format!(
        "SELECT {PRODUCT_COLUMNS} FROM read_products WHERE ($1::text IS NULL OR sku > $1) ORDER BY sku LIMIT $2"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?
        .iter()
        .map(product_from_row)
        .collect()
}

/// One customer's summary.
pub async fn get_customer(pool: &PgPool, id: Uuid) -> Result<Option<CustomerView>, sqlx::Error> {
    let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM read_customers WHERE customer_id = $1");
    sqlx::query(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .as_ref()
        .map(customer_from_row)
        .transpose()
}

/// Each rebuilt table: (shadow, live).
const REBUILT: [(&str, &str); 3] = [
    (SHADOW.orders, LIVE.orders),
    (SHADOW.products, LIVE.products),
    (SHADOW.customers, LIVE.customers),
];

/// A table's primary key constraint: (name, definition).
async fn primary_key(
    conn: &mut PgConnection,
    table: &str,
) -> Result<(String, String), sqlx::Error> {
    sqlx::query_as(
        "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
         WHERE conrelid = $1::regclass AND contype = 'p'",
    )
    .bind(table)
    .fetch_one(conn)
    .await
}

/// Creates empty shadow tables shaped like the live ones, with their primary keys but not
/// yet their other indexes: rows go in faster, and [`index_shadow`] builds those indexes in
/// one pass once the replay is done.
pub async fn create_shadow(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for (shadow, live) in REBUILT {
        let (_, definition) = primary_key(conn, live).await?;
        for sql in [
            format!("DROP TABLE IF EXISTS {shadow}"),
            format!("CREATE TABLE {shadow} (LIKE {live} INCLUDING ALL EXCLUDING INDEXES)"),
            format!("ALTER TABLE {shadow} ADD {definition}"),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// An index of a live table other than its primary key.
struct SecondaryIndex {
    /// Its name (the shadow's copy is `<name>_rebuild` until the swap).
    name: String,
    /// `CREATE INDEX` or `CREATE UNIQUE INDEX`.
    create: &'static str,
    /// Its definition from `USING` on: method, columns, predicate.
    definition: String,
}

/// The live table's indexes other than its primary key. The read models have no other
/// constraints; one backed by an index would need copying as a constraint, so it is
/// refused rather than silently turned into a plain index.
async fn secondary_indexes(
    conn: &mut PgConnection,
    live: &str,
) -> Result<Vec<SecondaryIndex>, sqlx::Error> {
    let rows: Vec<(String, bool, bool, String)> = sqlx::query_as(
        "SELECT c.relname::text, i.indisunique, \
           EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid), \
           pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = $1::regclass AND NOT i.indisprimary ORDER BY 1",
    )
    .bind(live)
    .fetch_all(&mut *conn)
    .await?;
    let unsupported = |why: String| sqlx::Error::Protocol(format!("cannot rebuild {live}: {why}"));
    rows.into_iter()
        .map(|(name, unique, constraint, definition)| {
            if constraint {
                return Err(unsupported(format!("index {name} backs a constraint")));
            }
            // PostgreSQL cuts names at 63 bytes, and the copy's name must not collide.
            if name.len() + "_rebuild".len() > 63 {
                return Err(unsupported(format!("index name {name} is too long")));
            }
            let Some(at) = definition.find(" USING ") else {
                return Err(unsupported(format!(
                    "unexpected index definition {definition}"
                )));
            };
            Ok(SecondaryIndex {
                definition: definition[at + 1..].to_owned(),
                create: if unique {
                    "CREATE UNIQUE INDEX"
                } else {
                    "CREATE INDEX"
                },
                name,
            })
        })
        .collect()
}

/// Builds the live tables' other indexes on the shadow tables (named `<live name>_rebuild`
/// until [`swap_shadow`] renames them). Building an index records the table's size for the
/// planner; its column statistics come from autovacuum (ANALYZE took as long as the three
/// index builds together, for the JSON lines).
pub async fn index_shadow(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for (shadow, live) in REBUILT {
        for index in secondary_indexes(conn, live).await? {
            let SecondaryIndex {
                name,
                create,
                definition,
            } = index;
            let sql = format!(r#"{create} "{name}_rebuild" ON {shadow} {definition}"#);
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// In the caller's transaction: blocks every writer and reader of the live tables until
/// commit.
pub async fn lock_live(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let sql = format!(
        "LOCK TABLE {}, {}, {} IN ACCESS EXCLUSIVE MODE",
        LIVE.orders, LIVE.products, LIVE.customers
    );
    sqlx::query(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

/// In the caller's transaction: puts the shadow tables in place of the live ones and drops
/// the old ones.
pub async fn swap_shadow(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    for (shadow, live) in REBUILT {
        let retired = format!("retired_{live}");
        // The shadow's primary key and indexes take the names the live ones had.
        let indexes = secondary_indexes(conn, live).await?;
        let (live_key, _) = primary_key(conn, live).await?;
        let (shadow_key, _) = primary_key(conn, shadow).await?;
        let mut statements = vec![
            format!("ALTER TABLE {live} RENAME TO {retired}"),
            format!("ALTER TABLE {shadow} RENAME TO {live}"),
            format!("DROP TABLE {retired}"),
            format!(r#"ALTER TABLE {live} RENAME CONSTRAINT "{shadow_key}" TO "{live_key}""#),
        ];
        statements.extend(
            indexes
                .iter()
                .map(|i| format!(r#"ALTER INDEX "{0}_rebuild" RENAME TO "{0}""#, i.name)),
        );
        for sql in statements {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// In the caller's transaction: gives `to` the checkpoint and counters of `from`, and
/// removes `from`.
pub async fn hand_over_checkpoint(
    conn: &mut PgConnection,
    from: &str,
    to: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints AS live SET transaction_id = s.transaction_id, \
           global_position = s.global_position, events_applied = s.events_applied, \
           unknown_skipped = s.unknown_skipped, state = 'running', last_error = NULL, updated_at = now(), \
           generation = live.generation + 1 \
         FROM projection_checkpoints AS s WHERE live.projection = $2 AND s.projection = $1",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(from)
        .execute(conn)
        .await?;
    Ok(())
}
