import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.Producer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * An upstream client written with Kafka's own Java producer, on its default settings (default
 * partitioner, idempotence on, acks=all). Reads one record per line from stdin,
 * "topic keyhex valuehex name=hex,name=hex", produces them, and prints "partition offset" per record.
 */
public final class ProduceRecords {
    private ProduceRecords() {
    }

    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", args[0]);
        props.put("key.serializer", ByteArraySerializer.class.getName());
        props.put("value.serializer", ByteArraySerializer.class.getName());
        HexFormat hex = HexFormat.of();
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (Producer<byte[], byte[]> producer = new KafkaProducer<>(props);
             BufferedReader in = new BufferedReader(new InputStreamReader(System.in))) {
            String line;
            while ((line = in.readLine()) != null) {
                String[] parts = line.trim().split(" ");
                ProducerRecord<byte[], byte[]> record =
                    new ProducerRecord<>(parts[0], hex.parseHex(parts[1]), hex.parseHex(parts[2]));
                if (parts.length > 3) {
                    for (String header : parts[3].split(",")) {
                        String[] nameValue = header.split("=");
                        record.headers().add(new RecordHeader(nameValue[0], hex.parseHex(nameValue[1])));
                    }
                }
                sent.add(producer.send(record));
            }
            for (Future<RecordMetadata> future : sent) {
                RecordMetadata metadata = future.get();
                System.out.println(metadata.partition() + " " + metadata.offset());
            }
        }
    }
}
