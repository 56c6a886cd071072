// Print a topic's records from the beginning with kafka-clients' Consumer (the jars install-kafka.sh
// resolved; they have no console consumer), run as a single-file program, no compile step:
//   java -cp "$WAFSTREAM_KAFKA_LIB/*" tests/services/kafka/ReadTopic.java 127.0.0.1:9092 imperva.dlq [MAX] [TIMEOUT_MS]
// One line per record: its value (UTF-8), preceded by its headers as `# name=value` lines and, when
// it has one, `# key=...`. Reads every partition from offset 0 without a consumer group (nothing is
// committed), and exits after MAX records (default: no limit) or when TIMEOUT_MS (default 10000)
// pass without a new record. Exit status 0 when MAX records were read or no MAX was given, else 1.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public final class ReadTopic {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: ReadTopic.java BOOTSTRAP TOPIC [MAX] [TIMEOUT_MS]");
            System.exit(2);
        }
        long max = args.length > 2 ? Long.parseLong(args[2]) : Long.MAX_VALUE;
        long timeoutMs = args.length > 3 ? Long.parseLong(args[3]) : 10_000;
        Map<String, Object> config = Map.of(
                "bootstrap.servers", args[0],
                "enable.auto.commit", "false",
                "key.deserializer", ByteArrayDeserializer.class.getName(),
                "value.deserializer", ByteArrayDeserializer.class.getName());
        long read = 0;
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(config)) {
            List<TopicPartition> partitions = consumer.partitionsFor(args[1], Duration.ofMillis(timeoutMs)).stream()
                    .map(p -> new TopicPartition(p.topic(), p.partition()))
                    .collect(Collectors.toList());
            if (partitions.isEmpty()) {
                System.err.println("ReadTopic: topic " + args[1] + " not found");
                System.exit(1);
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            long idleSince = System.currentTimeMillis();
            while (read < max && System.currentTimeMillis() - idleSince < timeoutMs) {
                for (ConsumerRecord<byte[], byte[]> record : consumer.poll(Duration.ofMillis(200))) {
                    if (record.key() != null) {
                        System.out.println("# key=" + text(record.key()));
                    }
                    for (Header header : record.headers()) {
                        System.out.println("# " + header.key() + "=" + text(header.value()));
                    }
                    System.out.println(text(record.value()));
                    idleSince = System.currentTimeMillis();
                    if (++read == max) {
                        break;
                    }
                }
            }
        }
        System.out.flush();
        System.exit(max == Long.MAX_VALUE || read == max ? 0 : 1);
    }

    private static String text(byte[] bytes) {
        return bytes == null ? "" : new String(bytes, StandardCharsets.UTF_8);
    }
}
