// The delayed-message plugin's README example (its "Usage" section),
// unchanged between the marked lines, wrapped in a program that connects
// to the broker given as the first argument (an AMQP URI) and closes.
// tests/python/test_delayed.py compiles it against Debian's RabbitMQ Java
// client (librabbitmq-client-java) and runs it against Warren.

import com.rabbitmq.client.AMQP;
import com.rabbitmq.client.Channel;
import com.rabbitmq.client.Connection;
import com.rabbitmq.client.ConnectionFactory;
import java.util.HashMap;
import java.util.Map;

public class DelayedMessageReadme {
    public static void main(String[] argv) throws Exception {
        ConnectionFactory factory = new ConnectionFactory();
        factory.setUri(argv[0]);
        try (Connection connection = factory.newConnection();
             Channel channel = connection.createChannel()) {
            // ---- from the plugin's README.md, unchanged ----
            Map<String, Object> args = new HashMap<String, Object>();
            args.put("x-delayed-type", "direct");
            channel.exchangeDeclare("my-exchange", "x-delayed-message", true, false, args);

            byte[] messageBodyBytes = "delayed payload".getBytes("UTF-8");
            Map<String, Object> headers = new HashMap<String, Object>();
            headers.put("x-delay", 5000);
            AMQP.BasicProperties.Builder props = new AMQP.BasicProperties.Builder().headers(headers);
            channel.basicPublish("my-exchange", "", props.build(), messageBodyBytes);

            byte[] messageBodyBytes2 = "more delayed payload".getBytes("UTF-8");
            Map<String, Object> headers2 = new HashMap<String, Object>();
            headers2.put("x-delay", 1000);
            AMQP.BasicProperties.Builder props2 = new AMQP.BasicProperties.Builder().headers(headers2);
            channel.basicPublish("my-exchange", "", props2.build(), messageBodyBytes2);
            // ---- end of the README's code ----
        }
    }
}
