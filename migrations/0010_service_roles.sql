-- Least privilege. Each service connects as a login role that belongs to one of these
-- group roles, and can do only what its service needs. The group roles cannot log in;
-- `orders-migrate` creates the login roles in them, with names and passwords from its
-- environment (README: Running it securely). Migrations run as the owner of the schema.
-- No service role may UPDATE, DELETE or TRUNCATE the events or the command log.
DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['orders_command', 'orders_query', 'orders_saga'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                -- Created meanwhile by a migration of another database of the cluster.
                NULL;
            END;
        END IF;
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA public TO orders_command, orders_query, orders_saga;
-- Every service checks at start-up that the migrations are applied (a read, when they are).
GRANT SELECT ON _sqlx_migrations TO orders_command, orders_query, orders_saga;

-- command-service: appends and reads the log, records and reads commands, keeps snapshots.
GRANT SELECT, INSERT ON events, command_log TO orders_command;
GRANT SELECT, INSERT, UPDATE ON snapshots TO orders_command;

-- query-service: reads the log; owns its read models (a rebuild builds shadow tables and
-- swaps them in by renaming); writes its checkpoints.
GRANT SELECT ON events TO orders_query;
GRANT CREATE ON SCHEMA public TO orders_query;
ALTER TABLE read_orders OWNER TO orders_query;
ALTER TABLE read_products OWNER TO orders_query;
ALTER TABLE read_customers OWNER TO orders_query;
GRANT SELECT, INSERT, UPDATE, DELETE ON projection_checkpoints TO orders_query;

-- saga-service: reads the log; keeps its sagas and its follower's checkpoint.
GRANT SELECT ON events TO orders_saga;
GRANT SELECT, INSERT, UPDATE ON sagas TO orders_saga;
GRANT SELECT, INSERT, UPDATE ON projection_checkpoints TO orders_saga;
