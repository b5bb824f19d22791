import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.Arrays;

/**
 * The client matrix's application workload with MariaDB Connector/J at its
 * default settings (a JDBC URL with nothing but host, port and database).
 *
 * <p>Usage: java -cp DIR:mariadb-java-client.jar Workload workload|restart|promote.
 * Connection and table come from DBR_HOST, DBR_PORT, DBR_USER, DBR_PASSWORD,
 * DBR_DATABASE, DBR_TABLE (and DBR_STOP_FILE for promote); the lines printed
 * are the protocol clients/doc.go describes.
 */
public final class Workload {
    private static final int BIG_ROW = 20 << 20;

    interface Check {
        void run() throws Exception;
    }

    private static String env(String name) {
        String v = System.getenv(name);
        if (v == null) {
            throw new IllegalStateException("missing environment variable " + name);
        }
        return v;
    }

    private static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    private static Connection connect() throws SQLException {
        String url = "jdbc:mariadb://" + env("DBR_HOST") + ":" + env("DBR_PORT") + "/" + env("DBR_DATABASE");
        return DriverManager.getConnection(url, env("DBR_USER"), env("DBR_PASSWORD"));
    }

    private static boolean check(String name, Check c) {
        try {
            c.run();
        } catch (Exception | AssertionError e) {
            say("fail " + name + ": " + e);
            return false;
        }
        say("ok " + name);
        return true;
    }

    private static String string(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            return rs.next() ? rs.getString(1) : null;
        }
    }

    public static void main(String[] args) throws Exception {
        String table = env("DBR_TABLE");
        switch (args[0]) {
            case "workload":
                workload(table);
                break;
            case "restart":
                restart(table);
                break;
            case "promote":
                promote(table);
                break;
            default:
                throw new IllegalArgumentException("unknown mode " + args[0]);
        }
    }

    private static void workload(String table) throws Exception {
        Connection[] holder = new Connection[1];
        if (!check("connect", () -> {
            holder[0] = connect();
            if (!"1".equals(string(holder[0], "SELECT 1"))) {
                throw new AssertionError("SELECT 1 did not answer 1");
            }
        })) {
            return;
        }
        Connection conn = holder[0];
        check("write_read", () -> {
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO " + table + " (id, v) VALUES (1, 'written')");
            }
            String got = string(conn, "SELECT v FROM " + table + " WHERE id = 1");
            if (!"written".equals(got)) {
                throw new AssertionError("read back " + got + ", want written");
            }
        });
        check("rollback", () -> {
            conn.setAutoCommit(false);
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO " + table + " (id, v) VALUES (2, 'rolled back')");
            }
            conn.rollback();
            conn.setAutoCommit(true);
            String n = string(conn, "SELECT COUNT(*) FROM " + table + " WHERE id = 2");
            if (!"0".equals(n)) {
                throw new AssertionError("the rolled-back row is there (" + n + " rows)");
            }
        });
        check("prepared", () -> {
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, ?)")) {
                ins.setInt(1, 3);
                ins.setString(2, "prepared");
                ins.executeUpdate();
            }
            try (PreparedStatement sel = conn.prepareStatement("SELECT v FROM " + table + " WHERE id = ?")) {
                sel.setInt(1, 3);
                try (ResultSet rs = sel.executeQuery()) {
                    String got = rs.next() ? rs.getString(1) : null;
                    if (!"prepared".equals(got)) {
                        throw new AssertionError("read back " + got + ", want prepared");
                    }
                }
            }
        });
        check("big_row", () -> {
            byte[] data = new byte[BIG_ROW];
            new SecureRandom().nextBytes(data);
            try (PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " (id, b) VALUES (?, ?)")) {
                ins.setInt(1, 4);
                ins.setBytes(2, data);
                ins.executeUpdate();
            }
            byte[] got;
            try (Statement st = conn.createStatement();
                    ResultSet rs = st.executeQuery("SELECT b FROM " + table + " WHERE id = 4")) {
                got = rs.next() ? rs.getBytes(1) : new byte[0];
            }
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            if (!Arrays.equals(sha.digest(data), sha.digest(got))) {
                throw new AssertionError("read back " + got.length + " bytes with another checksum");
            }
        });
        check("dup_key", () -> {
            try (Statement st = conn.createStatement()) {
                st.executeUpdate("INSERT INTO " + table + " (id, v) VALUES (1, 'again')");
            } catch (SQLException e) {
                if (e.getErrorCode() != 1062) {
                    throw new AssertionError("error " + e.getErrorCode() + " (" + e.getMessage() + "), want 1062");
                }
                return;
            }
            throw new AssertionError("a duplicate key was accepted");
        });
        conn.close();
    }

    private static void restart(String table) throws Exception {
        Connection conn = connect();
        string(conn, "SELECT 1");
        say("ready");
        new BufferedReader(new InputStreamReader(System.in)).readLine(); // the proxy has restarted
        try {
            string(conn, "SELECT 1");
            say("info old connection still answers");
        } catch (SQLException e) {
            say("info old connection: " + e);
        }
        long deadline = System.nanoTime() + 30_000_000_000L;
        Throwable last = null;
        while (System.nanoTime() < deadline) {
            try (Connection c = connect(); Statement st = c.createStatement()) {
                st.executeUpdate("REPLACE INTO " + table + " (id, v) VALUES (100, 'reconnected')");
                String got = string(c, "SELECT v FROM " + table + " WHERE id = 100");
                if (!"reconnected".equals(got)) {
                    throw new AssertionError("read back " + got);
                }
                say("ok reconnect");
                return;
            } catch (Exception | AssertionError e) {
                last = e;
                Thread.sleep(100);
            }
        }
        say("fail reconnect: " + last);
    }

    private static void promote(String table) throws Exception {
        Path stop = Path.of(env("DBR_STOP_FILE"));
        int n = 0;
        try (Connection conn = connect();
                PreparedStatement ins = conn.prepareStatement("INSERT INTO " + table + " (id, v) VALUES (?, 'p')");
                PreparedStatement sel = conn.prepareStatement("SELECT v FROM " + table + " WHERE id = ?")) {
            while (!Files.exists(stop)) {
                int id = 1000 + n;
                ins.setInt(1, id);
                ins.executeUpdate();
                sel.setInt(1, id);
                try (ResultSet rs = sel.executeQuery()) {
                    String got = rs.next() ? rs.getString(1) : null;
                    if (!"p".equals(got)) {
                        throw new AssertionError("row " + id + " read back as " + got);
                    }
                }
                n++;
                if (n == 1) {
                    say("ready");
                }
                say("tick");
            }
        } catch (Exception | AssertionError e) {
            say("fail promote: after " + n + " writes: " + e);
            System.exit(1);
        }
        say("ok promote " + n);
    }
}
