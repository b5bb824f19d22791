package mariadb

import "testing"

func TestParseReplicaStatus(t *testing.T) {
	row := map[string]string{
		"Connection_name": "", "Master_Host": "127.0.0.1", "Master_Port": "3306", "Master_Server_Id": "2",
		"Slave_IO_Running": "Connecting", "Slave_SQL_Running": "Yes", "Gtid_IO_Pos": "0-2-9 ",
		"Last_IO_Errno": "2003", "Last_IO_Error": "can't connect", "Read_Master_Log_Pos": "1234",
		"Master_Log_File": "binlog.000002", "Slave_received_heartbeats": "17", "Slave_heartbeat_period": "0.250",
		"Relay_Log_File": "relay.000003", "Relay_Log_Pos": "774",
	}
	st, err := ParseReplicaStatus(row)
	if err != nil {
		t.Fatal(err)
	}
	if st.Source() != "127.0.0.1:3306" || st.SourceServerID != 2 || st.IORunning() || !st.SQLRunning || st.GTIDIOPos != "0-2-9" ||
		st.HeartbeatPeriod != 0.25 || st.RelayLogFile != "relay.000003" || st.RelayLogPos != 774 || st.Errors() != "IO error 2003: can't connect" {
		t.Fatalf("%+v", st)
	}
	before := st.Progress()
	row["Slave_received_heartbeats"] = "18"
	st2, _ := ParseReplicaStatus(row)
	if st2.Progress() == before {
		t.Fatal("a heartbeat did not change the progress")
	}
	for _, col := range []string{"Master_Server_Id", "Master_Port", "Slave_heartbeat_period", "Read_Master_Log_Pos"} {
		bad := map[string]string{col: "x1"}
		if _, err := ParseReplicaStatus(bad); err == nil {
			t.Errorf("%s=x1 accepted", col)
		}
	}
}

func FuzzParseReplicaStatus(f *testing.F) {
	f.Add("2", "3306", "0.5", "12")
	f.Fuzz(func(t *testing.T, id, port, period, pos string) {
		_, _ = ParseReplicaStatus(map[string]string{"Master_Server_Id": id, "Master_Port": port, "Slave_heartbeat_period": period, "Read_Master_Log_Pos": pos})
	})
}
