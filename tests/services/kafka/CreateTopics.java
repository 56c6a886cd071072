// Create topics on a broker with kafka-clients' Admin (the jars install-kafka.sh resolved), run as
// a single-file program, no compile step:
//   java -cp "$WAFSTREAM_KAFKA_LIB/*" tests/services/kafka/CreateTopics.java 127.0.0.1:9092 raw:4 dlq:1
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;

public final class CreateTopics {
    public static void main(String[] args) throws Exception {
        List<NewTopic> topics = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            String[] nameParts = args[i].split(":");
            topics.add(new NewTopic(nameParts[0], Optional.of(Integer.parseInt(nameParts[1])), Optional.empty()));
        }
        try (Admin admin = Admin.create(Map.of("bootstrap.servers", args[0]))) {
            admin.createTopics(topics).all().get();
        }
    }
}
