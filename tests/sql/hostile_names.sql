-- Names of every shape at every level (issue 7 item 7): keywords, mixed case, embedded quotes,
-- dots, spaces, non-ASCII, SQL-looking text. A backup and its validation must count, restore
-- and refresh every one of them. Load into an EMPTY database as a superuser:
--   psql -v ON_ERROR_STOP=1 -f hostile_names.sql
-- Also: a NOT VALID check that old rows violate, foreign keys between hostile tables, and a
-- function whose body holds a line that looks like a pg_dump entry header.

SET client_encoding = 'UTF8';
SET client_min_messages = warning;

CREATE SCHEMA "order";                 -- reserved keyword: order.x is a syntax error unquoted
CREATE SCHEMA "select";
CREATE SCHEMA "MixedCase";
CREATE SCHEMA "we""ird";
CREATE SCHEMA "a.b";
CREATE SCHEMA "with space";
CREATE SCHEMA "ñandú ☃";

CREATE TABLE "order"."select" (id integer PRIMARY KEY, "user" text NOT NULL);
CREATE TABLE "order"."user" (id integer PRIMARY KEY, select_id integer REFERENCES "order"."select" (id));
CREATE TABLE "select"."from" (id integer PRIMARY KEY, note text);
CREATE TABLE "MixedCase"."MixedTable" (id integer PRIMARY KEY, "Value" text);
CREATE TABLE "MixedCase".mixedtable (id integer PRIMARY KEY);   -- differs from "MixedTable" only by case
CREATE TABLE "we""ird"."ta""ble" (id integer PRIMARY KEY, "co""l" text);
CREATE TABLE "a.b"."c.d" (id integer PRIMARY KEY, parent integer REFERENCES "we""ird"."ta""ble" (id));
CREATE TABLE "with space"." leading and trailing " (id integer PRIMARY KEY);
CREATE TABLE "ñandú ☃"."データ" (id integer PRIMARY KEY, 値 text);
CREATE TABLE public."x""; DROP TABLE public.victim; --" (id integer PRIMARY KEY);
CREATE TABLE public.victim (id integer PRIMARY KEY);

INSERT INTO "order"."select" SELECT g, 'user ' || g FROM generate_series(1, 7) g;
INSERT INTO "order"."user" SELECT g, 1 + g % 7 FROM generate_series(1, 11) g;
INSERT INTO "select"."from" SELECT g, CASE WHEN g % 2 = 0 THEN '' ELSE 'n' || g END FROM generate_series(1, 6) g;
INSERT INTO "MixedCase"."MixedTable" SELECT g, 'v' || g FROM generate_series(1, 3) g;
INSERT INTO "MixedCase".mixedtable SELECT g FROM generate_series(1, 5) g;
INSERT INTO "we""ird"."ta""ble" SELECT g, 'q"' || g FROM generate_series(1, 4) g;
INSERT INTO "a.b"."c.d" SELECT g, 1 + g % 4 FROM generate_series(1, 9) g;
INSERT INTO "with space"." leading and trailing " SELECT g FROM generate_series(1, 2) g;
INSERT INTO "ñandú ☃"."データ" SELECT g, '値' || g FROM generate_series(1, 8) g;
INSERT INTO public."x""; DROP TABLE public.victim; --" VALUES (1);
INSERT INTO public.victim VALUES (1), (2);

-- Legacy rows violate it: a restore must add it after the data (post-data), as pg_dump does.
ALTER TABLE "select"."from" ADD CONSTRAINT "from note not empty" CHECK (note <> '') NOT VALID;

CREATE MATERIALIZED VIEW "order"."select mv" AS
    SELECT s.id, count(u.id) AS users FROM "order"."select" s LEFT JOIN "order"."user" u ON u.select_id = s.id GROUP BY s.id;
CREATE MATERIALIZED VIEW "we""ird"."Mat.View" AS SELECT count(*) AS n FROM "a.b"."c.d";
CREATE MATERIALIZED VIEW "ñandú ☃"."ビュー" AS SELECT id FROM "ñandú ☃"."データ" WHERE id > 2;

-- A body line shaped like pg_dump's entry header: splitting the plain schema here would run
-- the rest of the pre-data after the data.
CREATE FUNCTION "order"."select"() RETURNS text LANGUAGE plpgsql AS $body$
BEGIN
    RETURN '
--
-- Name: fake; Type: CONSTRAINT; Schema: order; Owner: -
--
';
END;
$body$;
CREATE VIEW "order"."after the fake header" AS SELECT "order"."select"() AS body;
