"""The "Project X" demo database: a small B2B shop with realistic-looking data.

Tables: customers, users (belong to a customer), products, orders (by a user of a
customer), order_items. All rows are generated server-side with
``INSERT ... SELECT ... FROM generate_series`` and random picks from embedded word
lists, so text compresses like real prose (gzip ~3-5x), not like pgbench padding.

Scale 1.0 = 315k rows, 68 MB (10^6 bytes) on disk incl. indexes; linear in scale;
~5.5 s per scale unit on 2 cores.
Deterministic for a given (scale, seed): generation runs in one session after
``setseed`` and in one transaction, so autovacuum cannot change plans midway.

CLI::

    python -m devtools.projectx_data --dsn "host=... dbname=projectx" --scale 0.5
    python -m devtools.projectx_data --dsn "..." --megabytes 500
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.extensions

# ----- embedded vocabulary ------------------------------------------------------
FIRST_NAMES = """
James Mary John Patricia Robert Jennifer Michael Linda William Elizabeth David Barbara Richard Susan
Joseph Jessica Thomas Sarah Charles Karen Christopher Nancy Daniel Lisa Matthew Betty Anthony Margaret
Mark Sandra Donald Ashley Steven Kimberly Paul Emily Andrew Donna Joshua Michelle Kenneth Carol Kevin
Amanda Brian Dorothy George Melissa Timothy Deborah Ronald Stephanie Edward Rebecca Jason Sharon Jeffrey
Laura Ryan Cynthia Jacob Kathleen Gary Amy Nicholas Angela Eric Shirley Jonathan Anna Stephen Brenda
Larry Pamela Justin Emma Scott Nicole Brandon Helen Benjamin Samantha Samuel Katherine Gregory Christine
Alexander Debra Frank Rachel Patrick Carolyn Raymond Janet Jack Catherine Dennis Maria Jerry Heather
Tyler Diane Aaron Ruth Jose Julie Adam Olivia Nathan Joyce Henry Virginia Douglas Victoria Zachary Kelly
Peter Lauren Kyle Christina Noah Joan Ethan Evelyn Jeremy Judith Walter Megan Christian Andrea Keith
Cheryl Roger Hannah Terry Jacqueline Austin Martha Sean Gloria Gerald Teresa Carl Ann Harold Sara
Dylan Madison Arthur Frances Lawrence Kathryn Jordan Janice Jesse Jean Bryan Abigail Billy Alice Bruce
Judy Gabriel Sophia Joe Grace Logan Denise Alan Amber Juan Doris Albert Marilyn Willie Danielle Elijah
Beverly Wayne Isabella Randy Theresa Vincent Diana Mason Natalie Roy Brittany Ralph Charlotte Bobby
Marie Russell Kayla Bradley Alexis Philip Lori Eugene Zoe Lucas Chloe Mateo Sofia Hiroshi Yuki Lars
Ingrid Pierre Amelie Giovanni Chiara Pedro Lucia Ahmed Fatima Wei Mei Raj Priya Olga Ivan Sven Astrid
""".split()

LAST_NAMES = """
Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson
Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis
Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams Nelson Baker Hall
Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker Cruz Edwards Collins
Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper Peterson Bailey Reed
Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James Bennett Gray Mendoza Ruiz
Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez Powell Jenkins Perry Russell
Sullivan Bell Coleman Butler Henderson Barnes Gonzales Fisher Vasquez Simmons Romero Jordan Patterson
Alexander Hamilton Graham Reynolds Griffin Wallace Moreno West Cole Hayes Bryant Herrera Gibson Ellis
Tran Medina Aguilar Stevens Murray Ford Castro Marshall Owens Harrison Fernandez McDonald Woods
Washington Kennedy Wells Vargas Henry Chen Freeman Webb Tucker Guzman Burns Crawford Olson Simpson
Porter Hunter Gordon Mendez Silva Shaw Snyder Mason Dixon Munoz Hunt Hicks Holmes Palmer Wagner Black
Robertson Boyd Rose Stone Salazar Fox Warren Mills Meyer Rice Schmidt Garza Daniels Ferguson Nichols
Stephens Soto Weaver Ryan Gardner Payne Grant Dunn Kelley Spencer Hawkins Arnold Pierce Hansen Peters
Santos Hart Bradley Knight Elliott Cunningham Duncan Armstrong Hudson Carroll Lane Riley Andrews Alvarado
Ray Delgado Berry Perkins Hoffman Johnston Matthews Pena Richards Willis Carpenter Lawrence Sandoval
Tanaka Suzuki Yamamoto Mueller Schneider Fischer Weber Rossi Russo Ferrari Dubois Laurent Novak Kowalski
Nowak Jensen Nielsen Larsen Johansson Lindqvist Ivanov Petrov Singh Kumar Sharma Wang Zhang Liu Haddad
""".split()

CITIES = """
US:New_York US:Los_Angeles US:Chicago US:Houston US:Phoenix US:Philadelphia US:San_Antonio US:San_Diego
US:Dallas US:Austin US:Seattle US:Denver US:Boston US:Portland US:Atlanta US:Miami US:Minneapolis
US:Detroit US:Nashville US:Baltimore US:Milwaukee US:Sacramento US:Raleigh US:Omaha US:Tucson
CA:Toronto CA:Montreal CA:Vancouver CA:Calgary CA:Ottawa CA:Edmonton CA:Winnipeg CA:Halifax
GB:London GB:Manchester GB:Birmingham GB:Leeds GB:Glasgow GB:Edinburgh GB:Bristol GB:Liverpool
DE:Berlin DE:Hamburg DE:Munich DE:Cologne DE:Frankfurt DE:Stuttgart DE:Leipzig DE:Dresden
FR:Paris FR:Lyon FR:Marseille FR:Toulouse FR:Nice FR:Nantes FR:Bordeaux FR:Lille
NL:Amsterdam NL:Rotterdam NL:Utrecht NL:Eindhoven ES:Madrid ES:Barcelona ES:Valencia ES:Seville
IT:Rome IT:Milan IT:Naples IT:Turin IT:Florence IT:Bologna SE:Stockholm SE:Gothenburg SE:Malmo
DK:Copenhagen DK:Aarhus NO:Oslo NO:Bergen FI:Helsinki PL:Warsaw PL:Krakow PL:Gdansk CZ:Prague
AT:Vienna CH:Zurich CH:Geneva BE:Brussels BE:Antwerp IE:Dublin PT:Lisbon PT:Porto JP:Tokyo JP:Osaka
JP:Kyoto AU:Sydney AU:Melbourne AU:Brisbane AU:Perth NZ:Auckland NZ:Wellington BR:Sao_Paulo
BR:Rio_de_Janeiro MX:Mexico_City MX:Guadalajara AR:Buenos_Aires CL:Santiago IN:Mumbai IN:Bangalore
IN:Delhi SG:Singapore KR:Seoul ZA:Cape_Town ZA:Johannesburg
""".split()

STREET_NAMES = """
Main Oak Pine Maple Cedar Elm Washington Lake Hill Park Sunset Railroad Church Mill River Spring Ridge
Meadow Forest Highland Valley Market Bridge Harbor Orchard Garden Station Willow Birch Chestnut Walnut
Franklin Jefferson Lincoln Madison Jackson Adams Union Center Prospect College School Victoria King Queen
Albert Canal Dock Quarry Granite Summit Liberty Commerce Industrial Airport Beacon Clover Heather
""".split()

STREET_TYPES = "Street Avenue Road Lane Drive Court Place Boulevard Way Terrace Square Parkway".split()

COMPANY_WORDS = """
Acme Apex Atlas Aurora Beacon Blue Bright Cascade Cedar Citadel Clear Coastal Cobalt Crest Crystal Delta
Eagle Echo Edge Ember Evergreen Falcon First Frontier Galaxy Global Golden Granite Green Harbor Horizon
Iron Jade Keystone Lakeside Liberty Lighthouse Lunar Maple Meridian Metro Midland Monarch Nimbus North
Northern Nova Oak Oasis Omega Orbit Pacific Peak Pinnacle Pioneer Polar Prairie Prime Quantum Radiant
Red River Rock Royal Sage Sapphire Silver Solar Sterling Summit Sun Swift Titan Trident True Union
United Valley Vanguard Vertex Vista Western Willow Zenith Copper Arrow Anchor Bridge Compass Harvest
""".split()

COMPANY_KINDS = """
Logistics Systems Supplies Industries Foods Motors Labs Analytics Outfitters Builders Partners Trading
Textiles Pharma Robotics Energy Networks Media Studios Furniture Hardware Electric Dynamics Brewing
Farms Designs Solutions Works Manufacturing Distribution Retail Imports Medical Health Software Marine
""".split()

COMPANY_SUFFIXES = "Inc. LLC Ltd. GmbH Corp. Co. AG S.A. B.V. Group Holdings PLC".split()

EMAIL_DOMAINS = """
example.com example.org example.net mail.test inbox.test post.test corp.test shop.test office.test
company.test business.test enterprise.test trade.test
""".split()

SEGMENTS = "enterprise mid-market small-business startup government education nonprofit".split()

ADJECTIVES = """
durable lightweight compact ergonomic premium rugged sleek portable modular wireless heavy-duty
insulated waterproof adjustable reusable stackable foldable organic recycled handcrafted vintage classic
modern minimalist industrial professional commercial deluxe standard essential advanced smart eco-friendly
high-performance low-profile weatherproof breathable cordless rechargeable magnetic reinforced stainless
galvanized anodized brushed polished matte glossy textured transparent translucent opaque flexible rigid
""".split()

COLORS = """
black white silver graphite navy crimson olive teal amber ivory charcoal sand slate forest burgundy
cobalt copper bronze pearl midnight coral mint lavender mustard rust
""".split()

MATERIALS = """
steel aluminum oak walnut bamboo leather canvas cotton wool linen nylon polyester ceramic glass brass
titanium carbon-fiber rubber silicone cork granite marble birch maple acrylic
""".split()

PRODUCT_NOUNS = """
chair desk lamp shelf cabinet drawer stool bench table monitor keyboard mouse headset speaker charger
cable adapter router switch backpack bag wallet bottle mug kettle blender toaster grinder pan pot knife
cutting-board tray basket organizer rack hook hanger mirror clock frame vase planter rug curtain pillow
blanket towel mat jacket vest glove boot sneaker sock hat scarf umbrella tent lantern flashlight drill
saw hammer wrench screwdriver pliers toolbox ladder cart trolley pallet crate bin label printer scanner
notebook pen marker stapler whiteboard projector tablet stand dock hub battery filter pump valve sensor
""".split()

CATEGORIES = """
Furniture Lighting Electronics Accessories Kitchen Home Apparel Footwear Outdoor Tools Storage Office
Networking Audio Garden Safety Cleaning Packaging Industrial Sports
""".split()

SHIPPING_METHODS = "standard express overnight economy freight pickup same-day".split()

CURRENCIES = "USD EUR GBP CAD JPY AUD SEK CHF".split()

# General vocabulary for free text (notes, descriptions, bios); big enough that
# text compresses like prose rather than like a repeated phrase.
WORDS = """
the of and to in is for on with as by at from that this it be are was an or not have has will can
all more about when which their there your our they we were been would could should may might must
order delivery customer product package invoice payment shipment warehouse address account request
please thanks confirm update change cancel return refund replace damaged missing late early urgent
call email contact team manager office reception loading dock gate floor building suite entrance back
front side door window kitchen storage room basement garage parking lot yard street corner before
after during morning afternoon evening weekend monday tuesday wednesday thursday friday saturday
sunday week month quarter year today tomorrow yesterday schedule appointment window hours minutes
quality price discount quote estimate budget contract agreement terms renewal subscription plan tier
support service issue problem question answer feedback review rating complaint compliment experience
fast slow quick careful gentle fragile heavy light large small medium extra spare additional optional
required included excluded available unavailable backordered discontinued seasonal limited edition
new used refurbished open box sealed wrapped labeled marked tagged signed stamped certified approved
rejected pending processing shipped delivered received inspected tested verified checked counted
packed loaded unloaded stored moved transferred assigned allocated reserved held released cleared
leave drop pick hand collect sign deliver ring knock wait notify text phone message reply forward
driver courier carrier truck van bike route zone region area district city town village county
north south east west central upper lower inner outer near far next previous last first second third
half double single pair set kit bundle box case pallet carton crate bag roll sheet unit piece item
color size model version variant style finish pattern shape design material fabric texture surface
strong soft hard smooth rough bright dark warm cool clean dry wet fresh old young simple complex
good great excellent fine poor bad better best worse worst happy satisfied disappointed surprised
because although however therefore meanwhile instead otherwise besides also still already again
always never often sometimes usually rarely once twice soon later now then here where why how what
who whom whose each every both either neither some any many much few little less least most other
such same different similar various several certain particular specific general special common
business company organization department division branch headquarters partner vendor supplier
client buyer seller owner operator engineer technician designer developer analyst consultant
project program initiative campaign launch release rollout migration upgrade installation setup
training onboarding documentation manual guide instructions warranty guarantee policy procedure
inventory stock level reorder threshold forecast demand supply chain logistics freight customs
duty tax fee charge cost total subtotal balance credit debit card transfer wire check cash deposit
note remember mention ensure avoid prefer recommend suggest require expect appreciate understand
agree decide choose plan prepare arrange organize coordinate manage handle resolve fix repair adjust
improve reduce increase maintain keep protect secure lock seal cover wrap tape fold stack sort
measure weigh count scan print copy file archive record report track trace monitor review audit
morning coffee lunch break meeting conference workshop seminar visit tour trip travel flight hotel
spring summer autumn winter holiday festival season rain snow wind storm heat cold weather forecast
garden tree flower grass stone water river lake mountain valley forest field farm bridge road path
history story reason purpose result effect cause detail example reference number code name title
""".split()


def _sql_array(words: list[str]) -> str:
    # Values are our own constants; still quote defensively.
    return "ARRAY[" + ",".join("'" + w.replace("_", " ").replace("'", "''") + "'" for w in words) + "]::text[]"


# Counts per 1.0 scale (order_items averages 3.5 per order).
BASE_COUNTS = {"customers": 10_000, "users": 30_000, "products": 5_000, "orders": 60_000}
TABLES = ("customers", "users", "products", "orders", "order_items")

# Measured on PostgreSQL 15 (scales 0.2, 1 and 3 agree within 3%): on-disk
# bytes (tables + TOAST + indexes) per 1.0 scale, used by scale_for_megabytes().
MEGABYTES_PER_SCALE = 68.2

SCHEMA_SQL = """
DROP TABLE IF EXISTS order_items, orders, products, users, customers CASCADE;
DROP TYPE IF EXISTS order_status, user_role CASCADE;
CREATE TYPE order_status AS ENUM ('pending', 'paid', 'packed', 'shipped', 'delivered', 'cancelled', 'refunded');
CREATE TYPE user_role AS ENUM ('owner', 'admin', 'buyer', 'viewer');

CREATE TABLE customers (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    company_name text NOT NULL,
    contact_name text NOT NULL,
    email text NOT NULL,
    phone text,
    street_address text NOT NULL,
    postal_code text NOT NULL,
    city text NOT NULL,
    country char(2) NOT NULL,
    segment text NOT NULL,
    credit_limit numeric(12, 2) NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    notes text,
    created_at timestamptz NOT NULL
);

CREATE TABLE users (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    username text NOT NULL,
    email text NOT NULL,
    first_name text NOT NULL,
    last_name text NOT NULL,
    role user_role NOT NULL,
    is_active boolean NOT NULL DEFAULT true,
    preferences jsonb NOT NULL DEFAULT '{}',
    bio text,
    last_login_at timestamptz,
    created_at timestamptz NOT NULL
);

CREATE TABLE products (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    sku text NOT NULL,
    name text NOT NULL,
    category text NOT NULL,
    description text NOT NULL,
    price numeric(10, 2) NOT NULL CHECK (price >= 0),
    cost numeric(10, 2) NOT NULL,
    weight_grams integer NOT NULL,
    stock_quantity integer NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL
);

CREATE TABLE orders (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id bigint NOT NULL,
    user_id bigint NOT NULL,
    status order_status NOT NULL,
    ordered_at timestamptz NOT NULL,
    shipped_at timestamptz,
    delivered_at timestamptz,
    shipping_method text NOT NULL,
    shipping_address text NOT NULL,
    currency char(3) NOT NULL,
    subtotal numeric(12, 2) NOT NULL,
    tax numeric(12, 2) NOT NULL,
    shipping_cost numeric(10, 2) NOT NULL,
    total numeric(12, 2) NOT NULL,
    notes text,
    metadata jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE order_items (
    order_id bigint NOT NULL,
    line_no smallint NOT NULL,
    product_id bigint NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    unit_price numeric(10, 2) NOT NULL,
    discount_pct numeric(5, 2) NOT NULL DEFAULT 0,
    line_total numeric(12, 2) GENERATED ALWAYS AS (round(quantity * unit_price * (1 - discount_pct / 100), 2)) STORED,
    gift_message text,
    PRIMARY KEY (order_id, line_no)
);
"""

# pg_temp helpers vanish with the session, so the demo schema stays clean.
HELPERS_SQL = """
CREATE FUNCTION pg_temp.px_pick(a text[]) RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT a[1 + floor(random() * cardinality(a))::int] $$;
CREATE FUNCTION pg_temp.px_text(a text[], lo int, hi int) RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT string_agg(a[1 + floor(random() * cardinality(a))::int], ' ')
          FROM generate_series(1, lo + floor(random() * (hi - lo + 1))::int) $$;
CREATE FUNCTION pg_temp.px_sentences(a text[], n int) RETURNS text LANGUAGE sql VOLATILE
    AS $$ SELECT string_agg(initcap(left(s, 1)) || substr(s, 2) || '.', ' ')
          FROM (SELECT pg_temp.px_text(a, 5, 14) AS s FROM generate_series(1, n)) AS t $$;
"""


def _fill_sql(counts: dict[str, int]) -> list[tuple[str, str]]:
    """(table, statement) pairs in load order; FKs are added afterwards (faster, like pg_restore)."""
    W = _sql_array(WORDS)
    FN = _sql_array(FIRST_NAMES)
    LN = _sql_array(LAST_NAMES)
    CITY = _sql_array(CITIES)
    ST = _sql_array(STREET_NAMES)
    STT = _sql_array(STREET_TYPES)
    CW = _sql_array(COMPANY_WORDS)
    CK = _sql_array(COMPANY_KINDS)
    CS = _sql_array(COMPANY_SUFFIXES)
    DOM = _sql_array(EMAIL_DOMAINS)
    SEG = _sql_array(SEGMENTS)
    ADJ = _sql_array(ADJECTIVES)
    COL = _sql_array(COLORS)
    MAT = _sql_array(MATERIALS)
    PN = _sql_array(PRODUCT_NOUNS)
    CAT = _sql_array(CATEGORIES)
    SHIP = _sql_array(SHIPPING_METHODS)
    CUR = _sql_array(CURRENCIES)
    nc, nu, np_, no = counts["customers"], counts["users"], counts["products"], counts["orders"]
    pick = "pg_temp.px_pick"
    text = "pg_temp.px_text"
    return [
        (
            "customers",
            f"""
INSERT INTO customers (id, company_name, contact_name, email, phone, street_address, postal_code,
                       city, country, segment, credit_limit, attributes, notes, created_at)
SELECT g, company, contact,
       lower(replace(split_part(contact, ' ', 1), '''', '')) || '.' || lower(split_part(contact, ' ', 2))
           || '@' || lower(replace(split_part(company, ' ', 1), '''', '')) || g || '.' || {pick}({DOM}),
       '+' || (1 + floor(random() * 98))::int || ' ' || lpad((floor(random() * 1e9))::bigint::text, 9, '0'),
       (1 + floor(random() * 9899))::int || ' ' || {pick}({ST}) || ' ' || {pick}({STT}),
       lpad((floor(random() * 99999))::int::text, 5, '0'),
       split_part(city, ':', 2), split_part(city, ':', 1),
       {pick}({SEG}),
       round((random() * 250000)::numeric, -2),
       jsonb_build_object('tier', (ARRAY['bronze','silver','gold','platinum'])[1 + floor(random() * 4)::int],
                          'newsletter', random() < 0.4,
                          'account_manager', {pick}({FN}) || ' ' || {pick}({LN}),
                          'tags', to_jsonb(ARRAY[{pick}({W}), {pick}({W})])),
       CASE WHEN random() < 0.6 THEN pg_temp.px_sentences({W}, 1 + floor(random() * 3)::int) END,
       timestamptz '2019-01-01 00:00:00+00' + random() * interval '1500 days'
FROM (SELECT g,
             {pick}({CW}) || ' ' || {pick}({CK}) || ' ' || {pick}({CS}) AS company,
             {pick}({FN}) || ' ' || {pick}({LN}) AS contact,
             {pick}({CITY}) AS city
      FROM generate_series(1, {nc}) AS g) AS s
""",
        ),
        (
            "users",
            f"""
INSERT INTO users (id, customer_id, username, email, first_name, last_name, role, is_active,
                   preferences, bio, last_login_at, created_at)
SELECT g, 1 + (g - 1) % {nc},
       lower(fn) || '.' || lower(replace(ln, '''', '')) || g,
       lower(fn) || '.' || lower(replace(ln, '''', '')) || g || '@' || {pick}({DOM}),
       fn, ln,
       (ARRAY['owner','admin','buyer','buyer','buyer','viewer']::user_role[])[1 + floor(random() * 6)::int],
       random() < 0.92,
       jsonb_build_object('language', (ARRAY['en','en','en','de','fr','es','ja','sv'])[1 + floor(random() * 8)::int],
                          'theme', (ARRAY['light','dark','system'])[1 + floor(random() * 3)::int],
                          'notifications', jsonb_build_object('email', random() < 0.7, 'sms', random() < 0.2),
                          'favorite_categories', to_jsonb(ARRAY[{pick}({CAT}), {pick}({CAT})])),
       CASE WHEN random() < 0.35 THEN {text}({W}, 8, 30) END,
       CASE WHEN random() < 0.9 THEN timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days' END,
       timestamptz '2019-06-01 00:00:00+00' + random() * interval '1600 days'
FROM (SELECT g, {pick}({FN}) AS fn, {pick}({LN}) AS ln FROM generate_series(1, {nu}) AS g) AS s
""",
        ),
        (
            "products",
            f"""
INSERT INTO products (id, sku, name, category, description, price, cost, weight_grams, stock_quantity,
                      attributes, is_active, created_at)
SELECT g, upper(left(cat, 3)) || '-' || lpad(g::text, 6, '0') || '-' || upper(left(col, 2)),
       initcap(adj || ' ' || col || ' ' || mat || ' ' || noun), cat,
       pg_temp.px_sentences({W}, 2 + floor(random() * 5)::int),
       price, round(price * (0.35 + random() * 0.4)::numeric, 2),
       (50 + floor(random() * 20000))::int, floor(random() * 5000)::int,
       jsonb_build_object('color', col, 'material', mat,
                          'dimensions_cm', jsonb_build_array(round((5 + random() * 150)::numeric, 1),
                                                             round((5 + random() * 150)::numeric, 1),
                                                             round((1 + random() * 90)::numeric, 1)),
                          'warranty_months', (ARRAY[0, 6, 12, 24, 36])[1 + floor(random() * 5)::int],
                          'keywords', to_jsonb(ARRAY[{pick}({W}), {pick}({W}), {pick}({ADJ})])),
       random() < 0.95,
       timestamptz '2018-01-01 00:00:00+00' + random() * interval '2000 days'
FROM (SELECT g, {pick}({ADJ}) AS adj, {pick}({COL}) AS col, {pick}({MAT}) AS mat, {pick}({PN}) AS noun,
             {pick}({CAT}) AS cat, round((2 + power(random(), 3) * 1500)::numeric, 2) AS price
      FROM generate_series(1, {np_}) AS g) AS s
""",
        ),
        # Items first: orders then carry the true subtotal without a second UPDATE pass.
        (
            "order_items",
            f"""
INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price, discount_pct, gift_message)
SELECT o, l, p.id, q, p.price, d, gm
FROM (SELECT o, l,
             1 + floor(power(random(), 1.6) * {np_})::bigint AS pid,
             (ARRAY[1,1,1,1,2,2,3,4,5,10,12,25])[1 + floor(random() * 12)::int] AS q,
             (ARRAY[0,0,0,0,0,5,10,15,20,2.5])[1 + floor(random() * 10)::int] AS d,
             CASE WHEN random() < 0.04 THEN {text}({W}, 3, 12) END AS gm
      FROM generate_series(1, {no}) AS o,
           LATERAL generate_series(1, 1 + ((o * 2654435761) % 6)::int) AS l) AS i
JOIN products AS p ON p.id = i.pid
ORDER BY o, l
""",
        ),
        (
            "orders",
            f"""
INSERT INTO orders (id, customer_id, user_id, status, ordered_at, shipped_at, delivered_at, shipping_method,
                    shipping_address, currency, subtotal, tax, shipping_cost, total, notes, metadata)
SELECT g, 1 + (u - 1) % {nc}, u, st, ts,
       CASE WHEN st IN ('shipped', 'delivered', 'refunded') THEN ts + (1 + random() * 72) * interval '1 hour' END,
       CASE WHEN st IN ('delivered', 'refunded') THEN ts + (30 + random() * 200) * interval '1 hour' END,
       {pick}({SHIP}),
       (1 + floor(random() * 9899))::int || ' ' || {pick}({ST}) || ' ' || {pick}({STT}) || ', '
           || replace(split_part({pick}({CITY}), ':', 2), '_', ' '),
       {pick}({CUR}),
       sub, round(sub * 0.2, 2), ship, sub + round(sub * 0.2, 2) + ship,
       CASE WHEN random() < 0.45 THEN pg_temp.px_sentences({W}, 1 + floor(random() * 2)::int) END,
       jsonb_build_object('channel', (ARRAY['web','web','web','mobile','phone','edi'])[1 + floor(random() * 6)::int],
                          'campaign', CASE WHEN random() < 0.3 THEN {pick}({W}) || '-' || {pick}({W}) END,
                          'ip', (10 + floor(random() * 200))::int || '.' || floor(random() * 255)::int
                                || '.' || floor(random() * 255)::int || '.' || floor(random() * 255)::int,
                          'gift', random() < 0.05)
FROM (SELECT g, 1 + floor(power(random(), 1.3) * {nu})::bigint AS u,
             (ARRAY['pending','paid','packed','shipped','delivered','delivered','delivered','delivered',
                    'cancelled','refunded']::order_status[])[1 + floor(random() * 10)::int] AS st,
             timestamptz '2021-01-01 00:00:00+00' + random() * interval '1460 days' AS ts,
             (ARRAY[0, 4.99, 9.99, 14.99, 29.99])[1 + floor(random() * 5)::int] AS ship
      FROM generate_series(1, {no}) AS g) AS s
JOIN (SELECT order_id, sum(line_total) AS sub FROM order_items GROUP BY order_id) AS t ON t.order_id = s.g
ORDER BY g
""",
        ),
    ]


CONSTRAINTS_SQL = """
ALTER TABLE users ADD CONSTRAINT users_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE users ADD CONSTRAINT users_username_key UNIQUE (username);
ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);
ALTER TABLE products ADD CONSTRAINT products_sku_key UNIQUE (sku);
ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE order_items ADD CONSTRAINT order_items_order_fk
    FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE;
ALTER TABLE order_items ADD CONSTRAINT order_items_product_fk FOREIGN KEY (product_id) REFERENCES products (id);
CREATE INDEX users_customer_idx ON users (customer_id);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_user_idx ON orders (user_id);
CREATE INDEX orders_ordered_at_idx ON orders (ordered_at);
CREATE INDEX order_items_product_idx ON order_items (product_id);
SELECT setval(pg_get_serial_sequence(t, 'id'), m, true)
FROM (VALUES ('customers', (SELECT max(id) FROM customers)), ('users', (SELECT max(id) FROM users)),
             ('products', (SELECT max(id) FROM products)), ('orders', (SELECT max(id) FROM orders))) AS v(t, m)
WHERE m IS NOT NULL;
"""


def counts_for_scale(scale: float) -> dict[str, int]:
    """Rows per table (order_items is derived: ~3.5 per order) for ``scale``."""
    if scale <= 0:
        raise ValueError("scale must be > 0")
    return {t: max(1, math.ceil(n * scale)) for t, n in BASE_COUNTS.items()}


def scale_for_megabytes(mb: float) -> float:
    """Scale whose on-disk size (tables + indexes) is about ``mb`` megabytes."""
    return round(mb / MEGABYTES_PER_SCALE, 4)


@contextlib.contextmanager
def _connection(conn_or_dsn: psycopg2.extensions.connection | str) -> Iterator[psycopg2.extensions.connection]:
    if isinstance(conn_or_dsn, str):
        conn = psycopg2.connect(conn_or_dsn)
        try:
            yield conn
        finally:
            conn.close()
    else:
        yield conn_or_dsn


def load_projectx(
    conn_or_dsn: psycopg2.extensions.connection | str,
    scale: float = 1.0,
    *,
    seed: float = 0.42,
    verbose: bool = False,
) -> dict[str, int]:
    """(Re)create the Project X tables in the connected database; return row counts per table.

    Existing Project X tables are dropped first. The whole load is one transaction.
    """
    counts = counts_for_scale(scale)
    with _connection(conn_or_dsn) as conn:
        old_autocommit = conn.autocommit
        conn.autocommit = False
        try:
            with conn.cursor() as cur:
                cur.execute("SET LOCAL synchronous_commit = off; SET LOCAL work_mem = '64MB'")
                cur.execute(SCHEMA_SQL)
                cur.execute(HELPERS_SQL)
                cur.execute("SELECT setseed(%s)", (seed,))
                for table, stmt in _fill_sql(counts):
                    t0 = time.monotonic()
                    cur.execute(stmt)
                    if verbose:
                        print(f"  {table}: {cur.rowcount} rows in {time.monotonic() - t0:.1f}s", file=sys.stderr)
                cur.execute(CONSTRAINTS_SQL)
                cur.execute(
                    "DROP FUNCTION pg_temp.px_sentences(text[], int), pg_temp.px_text(text[], int, int),"
                    " pg_temp.px_pick(text[])"
                )
                result = {}
                for table in TABLES:
                    cur.execute(f"SELECT count(*) FROM {table}")
                    result[table] = int(cur.fetchone()[0])
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            conn.autocommit = old_autocommit
        # Fresh stats make the demo's queries (and pg_dump ordering by size) realistic.
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE customers, users, products, orders, order_items")
        conn.autocommit = old_autocommit
    return result


def projectx_size_bytes(conn_or_dsn: psycopg2.extensions.connection | str) -> int:
    """On-disk bytes of the Project X tables including TOAST and indexes."""
    with _connection(conn_or_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest(%s::text[]) AS t", (list(TABLES),))
        return int(cur.fetchone()[0])


def dump_gzip_ratio(dsn: str, *, level: int = 6) -> dict[str, Any]:
    """Plain ``pg_dump`` size vs its gzip size (how compressible the demo data is)."""
    from devtools.db_compare import client_conninfo
    from devtools.pg_cluster import pg_bin

    with client_conninfo(dsn) as (conninfo, env):
        proc = subprocess.Popen(
            [pg_bin("pg_dump"), f"--dbname={conninfo}", "--format=plain", "--no-owner"],
            env=env,
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        raw = packed = 0
        # Streamed through a gzip-format compressobj: constant memory for any dump size.
        z = zlib.compressobj(level, zlib.DEFLATED, 31)
        while chunk := proc.stdout.read(1 << 20):
            raw += len(chunk)
            packed += len(z.compress(chunk))
        packed += len(z.flush())
        if proc.wait() != 0:
            raise RuntimeError("pg_dump failed")
    return {"dump_bytes": raw, "gzip_bytes": packed, "ratio": round(raw / max(packed, 1), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.projectx_data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dsn", required=True, help="libpq conninfo of the target database")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, default=None, help="1.0 = 315k rows, ~68 MB")
    size.add_argument("--megabytes", type=float, default=None, help="target on-disk size")
    parser.add_argument("--seed", type=float, default=0.42)
    parser.add_argument("--gzip-ratio", action="store_true", help="also measure pg_dump | gzip ratio")
    args = parser.parse_args(argv)
    scale = (
        args.scale
        if args.scale is not None
        else (scale_for_megabytes(args.megabytes) if args.megabytes is not None else 1.0)
    )
    t0 = time.monotonic()
    counts = load_projectx(args.dsn, scale, seed=args.seed, verbose=True)
    report: dict[str, Any] = {
        "scale": scale,
        "rows": counts,
        "total_rows": sum(counts.values()),
        "seconds": round(time.monotonic() - t0, 1),
        "megabytes": round(projectx_size_bytes(args.dsn) / 1e6, 1),
    }
    if args.gzip_ratio:
        report["gzip"] = dump_gzip_ratio(args.dsn)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
