// Print how many records a topic holds (the sum of its partitions' end offsets), with kafka-clients'
// Consumer, run as a single-file program:
//   java -cp "$WAFSTREAM_KAFKA_LIB/*" tests/services/kafka/EndOffsets.java 127.0.0.1:9092 TOPIC...
// One line per topic: `TOPIC COUNT`. Nothing is read or committed (no group). For topics that were
// never compacted or expired (tests, benchmarks) the end offset is the number of records written.
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class EndOffsets {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: EndOffsets.java BOOTSTRAP TOPIC...");
            System.exit(2);
        }
        Map<String, Object> config = Map.of(
                "bootstrap.servers", args[0],
                "key.deserializer", ByteArrayDeserializer.class.getName(),
                "value.deserializer", ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(config)) {
            for (int i = 1; i < args.length; i++) {
                String topic = args[i];
                List<TopicPartition> parts = c.partitionsFor(topic, Duration.ofSeconds(30)).stream()
                        .map(p -> new TopicPartition(topic, p.partition()))
                        .collect(Collectors.toList());
                long sum = c.endOffsets(parts, Duration.ofSeconds(30)).values().stream().mapToLong(Long::longValue).sum();
                System.out.println(topic + " " + sum);
            }
        }
    }
}
